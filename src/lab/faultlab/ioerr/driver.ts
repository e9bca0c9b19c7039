/** What the ioerr runner needs from a target: build it, run workload ops, tear it down, check recovery. */
export interface OpResult {
  ok: boolean;
  error?: string;
}

export interface CaseOutcome {
  /** Ops [0, committed) completed before the injector tripped: they must be durable. */
  committed: number;
  /** Ops [0, attempted) were run; [committed, attempted) may or may not have reached the disk. */
  attempted: number;
}

export interface Driver<Op> {
  /** The device the workload runs on. */
  readonly name: string;
  /** Whether the target stops changing its metadata after a metadata error (so it can be torn down live). */
  readonly hasFailMode: boolean;
  create(): Promise<void>;
  run(op: Op): Promise<OpResult>;
  /** After a tripped error fault: null if the target shows it failed, else what is wrong. */
  probeFailMode(): Promise<string | null>;
  remove(): Promise<void>;
  /** With the metadata device healthy again: the problems found (empty = the contract holds). */
  verify(ops: readonly Op[], outcome: CaseOutcome): Promise<string[]>;
}
