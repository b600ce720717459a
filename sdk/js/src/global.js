// The script-tag build: one ready instance as `window.leadscore`, plus `create` for a second one.
import { createLeadscore } from "./leadscore.js";

const leadscore = createLeadscore();
leadscore.create = createLeadscore;
globalThis.leadscore = leadscore;
