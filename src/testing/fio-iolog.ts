import * as fs from 'node:fs';

/** Writes a fio version 2 replay log to `file`: `ioBytes` writes to `dev` at `offsets` (bytes), in that order. */
export function writeFioIolog(file: string, dev: string, offsets: readonly number[], ioBytes: number): void {
  const lines = ['fio version 2 iolog', `${dev} add`, `${dev} open`];
  for (const o of offsets) lines.push(`${dev} write ${o} ${ioBytes}`);
  lines.push(`${dev} close`, '');
  fs.writeFileSync(file, lines.join('\n'));
}
