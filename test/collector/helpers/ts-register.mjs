// `node --import ./test/collector/helpers/ts-register.mjs file.ts`: see ts-hooks.mjs (tests only).
import { register } from 'node:module';

register('./ts-hooks.mjs', import.meta.url);
