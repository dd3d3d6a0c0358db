import { describe, expect, it } from 'vitest';
import { isValidTimeZone, localTime, parseHhmm, type Schedule, scheduleMatches } from '../../src/edge/schedule.js';

const sched = (days: string[], from: string, to: string, tz: string): Schedule => ({
  days: new Set(days as never[]),
  fromMinute: parseHhmm(from, false)!,
  toMinute: parseHhmm(to, true)!,
  timeZone: tz,
});
// 2026-11-30 is a Monday
const at = (iso: string) => Date.parse(iso);

describe('schedule', () => {
  it('parses hours strictly', () => {
    expect(parseHhmm('08:30', false)).toBe(510);
    expect(parseHhmm('24:00', true)).toBe(1440);
    expect(parseHhmm('24:00', false)).toBeNull();
    for (const bad of ['8:30', '08:60', '25:00', '0830', '08:30 ', '-1:00']) expect(parseHhmm(bad, true)).toBeNull();
  });

  it('knows IANA zones through Intl and refuses others', () => {
    expect(isValidTimeZone('Europe/Berlin')).toBe(true);
    expect(isValidTimeZone('UTC')).toBe(true);
    expect(isValidTimeZone('Mars/Olympus')).toBe(false);
    expect(isValidTimeZone('')).toBe(false);
  });

  it('evaluates local day and hour in the named zone (DST included)', () => {
    // 07:30 UTC on Monday 30 Nov 2026 = 08:30 in Berlin (CET, UTC+1)
    expect(localTime(at('2026-11-30T07:30:00Z'), 'Europe/Berlin')).toEqual({ day: 1, minute: 510 });
    // summer: 06:30 UTC = 08:30 CEST
    expect(localTime(at('2026-07-06T06:30:00Z'), 'Europe/Berlin')).toEqual({ day: 1, minute: 510 });
    // the same instant is still Sunday in Los Angeles
    expect(localTime(at('2026-11-30T07:30:00Z'), 'America/Los_Angeles').day).toBe(0);
    const office = sched(['mon', 'tue', 'wed', 'thu', 'fri'], '08:00', '18:00', 'Europe/Berlin');
    expect(scheduleMatches(office, at('2026-11-30T07:00:00Z'))).toBe(true); // 08:00 Mon
    expect(scheduleMatches(office, at('2026-11-30T06:59:00Z'))).toBe(false); // 07:59
    expect(scheduleMatches(office, at('2026-11-30T17:00:00Z'))).toBe(false); // 18:00: end exclusive
    expect(scheduleMatches(office, at('2026-11-29T10:00:00Z'))).toBe(false); // Sunday
  });

  it('a span crossing midnight belongs to the day it starts on', () => {
    const night = sched(['fri'], '22:00', '06:00', 'UTC');
    expect(scheduleMatches(night, at('2026-12-04T23:00:00Z'))).toBe(true); // Fri 23:00
    expect(scheduleMatches(night, at('2026-12-05T05:59:00Z'))).toBe(true); // Sat 05:59
    expect(scheduleMatches(night, at('2026-12-05T06:00:00Z'))).toBe(false);
    expect(scheduleMatches(night, at('2026-12-05T23:00:00Z'))).toBe(false); // Sat night
    expect(scheduleMatches(night, at('2026-12-04T05:00:00Z'))).toBe(false); // Fri early: Thursday's span
  });
});
