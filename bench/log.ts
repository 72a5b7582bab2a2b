// Progress lines on stderr (stdout carries only the report), stamped with the time of day.
export const log = (msg: string): void => console.error(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);
