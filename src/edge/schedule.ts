/**
 * Operating schedules (pure): days of the week and an hour range in a named IANA time zone, evaluated
 * with Intl (no time-zone package). `from` < `to`: that span of each listed day; `from` > `to`: the span
 * crosses midnight and belongs to the day it starts on.
 */

export const DAY_NAMES = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;
export type DayName = (typeof DAY_NAMES)[number];

export interface Schedule {
  days: ReadonlySet<DayName>;
  /** Minutes after local midnight, [from, to). from === to is refused by the config. */
  fromMinute: number;
  toMinute: number;
  timeZone: string;
}

const HHMM = /^([01][0-9]|2[0-3]):([0-5][0-9])$/;

/** `HH:MM` (00:00..23:59) or `24:00` (as an end) -> minutes; null when malformed. */
export function parseHhmm(text: string, end: boolean): number | null {
  if (end && text === '24:00') return 24 * 60;
  const m = HHMM.exec(text);
  return m ? Number(m[1]) * 60 + Number(m[2]) : null;
}

/** Whether Intl knows the zone (IANA names such as Europe/Berlin, or UTC). */
export function isValidTimeZone(tz: string): boolean {
  if (typeof tz !== 'string' || tz.length === 0 || tz.length > 64) return false;
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(tz: string): Intl.DateTimeFormat {
  let f = formatters.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone: tz, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
    formatters.set(tz, f);
  }
  return f;
}

/** Local weekday (0 = Sunday) and minute of the day at `nowMs` in the zone. */
export function localTime(nowMs: number, tz: string): { day: number; minute: number } {
  const parts = formatter(tz).formatToParts(new Date(nowMs));
  let wd = '';
  let h = 0;
  let m = 0;
  for (const p of parts) {
    if (p.type === 'weekday') wd = p.value.toLowerCase().slice(0, 3);
    else if (p.type === 'hour') h = Number(p.value) % 24;
    else if (p.type === 'minute') m = Number(p.value);
  }
  const day = DAY_NAMES.indexOf(wd as DayName);
  return { day: Math.max(day, 0), minute: h * 60 + m };
}

export function scheduleMatches(s: Schedule, nowMs: number): boolean {
  const { day, minute } = localTime(nowMs, s.timeZone);
  const today = DAY_NAMES[day]!;
  if (s.fromMinute < s.toMinute) return s.days.has(today) && minute >= s.fromMinute && minute < s.toMinute;
  // crosses midnight: the evening part today, or the early part of a span that started yesterday
  if (minute >= s.fromMinute) return s.days.has(today);
  if (minute < s.toMinute) return s.days.has(DAY_NAMES[(day + 6) % 7]!);
  return false;
}
