/** The report options dmsetup's column output takes (-c/-C, -o, -O, -S, --noheadings, --separator, --nameprefixes). */
import type { Argv } from 'yargs';
import type { ReportOptions } from './report';

export interface ReportArgs {
  readonly columns: boolean;
  readonly report: ReportOptions;
}

export function reportOptions<T>(b: Argv<T>): Argv<T> {
  return b
    .option('columns', { alias: ['c', 'C'], type: 'boolean', default: false, describe: 'column output (a report)' })
    .option('o', { type: 'string', requiresArg: true, describe: 'report fields, comma-separated (+F adds to the defaults)' })
    .option('sort', { alias: 'O', type: 'string', requiresArg: true, describe: 'sort by these fields (-F descending)' })
    .option('select', { alias: 'S', type: 'string', requiresArg: true, describe: 'only rows matching, e.g. "name=vol && open>0"' })
    .option('noheadings', { type: 'boolean', default: false, describe: 'no heading line (separator becomes ":")' })
    .option('separator', { type: 'string', requiresArg: true, describe: 'separate columns with this (no alignment)' })
    .option('nameprefixes', { type: 'boolean', default: false, describe: "print DM_FIELD='value' pairs" })
    .middleware((argv) => {
      const a = argv as unknown as Record<string, unknown>;
      const report: ReportOptions = {
        ...(typeof a.o === 'string' ? { fields: a.o } : {}),
        ...(typeof a.sort === 'string' ? { sort: a.sort } : {}),
        ...(typeof a.select === 'string' ? { select: a.select } : {}),
        headings: a.noheadings !== true,
        ...(typeof a.separator === 'string' ? { separator: a.separator } : {}),
        namePrefixes: a.nameprefixes === true,
      };
      a.report = report;
    }) as unknown as Argv<T>;
}
