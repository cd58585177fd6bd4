/**
 * Progress of long transfers (hashing, uploading): a redrawn bar on a terminal, a plain line every 10% otherwise
 * (logs, CI). The formatting is pure; the reporter takes its clock so its throttling is testable.
 */

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'] as const;

/** 512 B, 1.5 KiB, 11.0 MiB, 2.00 GiB. */
export function formatBytes(n: number): string {
  let value = n;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  if (unit === 0) return `${value} B`;
  return `${value.toFixed(value < 10 && unit >= 3 ? 2 : 1)} ${UNITS[unit]}`;
}

/** 42s, 3m05s, 1h02m. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** [#########-----------] for a fraction in [0, 1]; width counts the inside of the brackets. */
export function progressBar(fraction: number, width: number): string {
  const f = Math.min(1, Math.max(0, Number.isFinite(fraction) ? fraction : 0));
  const filled = Math.floor(f * width);
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}]`;
}

export interface ProgressState {
  readonly label: string;
  readonly done: number;
  readonly total: number;
  readonly elapsedMs: number;
}

export function percentOf(done: number, total: number): number {
  return total <= 0 ? 100 : Math.min(100, Math.floor((done * 100) / total));
}

/** Rate and time left, once there is enough elapsed time to say anything. */
function rateAndEta(p: ProgressState): string {
  if (p.elapsedMs < 250 || p.done <= 0) return '';
  const rate = (p.done * 1000) / p.elapsedMs;
  const eta = p.done < p.total ? `  ETA ${formatDuration((p.total - p.done) / rate)}` : '';
  return `  ${formatBytes(rate)}/s${eta}`;
}

/** One terminal line: label, bar, percent, bytes, rate and ETA, fitted to `width` columns. */
export function progressLine(p: ProgressState, width = 80): string {
  const pct = `${String(percentOf(p.done, p.total)).padStart(3)}%`;
  const tail = `${pct}  ${formatBytes(p.done)} / ${formatBytes(p.total)}${rateAndEta(p)}`;
  const barWidth = Math.min(30, width - p.label.length - tail.length - 4);
  const line =
    barWidth >= 10 ? `${p.label} ${progressBar(p.done / p.total, barWidth)} ${tail}` : `${p.label} ${tail}`;
  return line.length > width ? line.slice(0, Math.max(0, width - 1)) : line;
}

/** The line written at each 10% step when the output is not a terminal. */
export function plainProgressLine(p: ProgressState): string {
  return `${p.label}: ${percentOf(p.done, p.total)}% (${formatBytes(p.done)} of ${formatBytes(p.total)})`;
}

/** The highest multiple of `step` percent reached. */
export function stepOf(done: number, total: number, step = 10): number {
  return Math.floor(percentOf(done, total) / step) * step;
}

export interface ProgressOutput {
  write(text: string): unknown;
  readonly isTTY?: boolean;
  readonly columns?: number;
}

export interface ProgressOptions {
  /** Nothing is written (--json). */
  readonly quiet?: boolean;
  readonly now?: () => number;
  /** Least time between two redraws on a terminal. @default 100 */
  readonly redrawMs?: number;
}

/** Reports progress of `total` units of work to stderr; add() takes negative deltas when a part is retried. */
export class Progress {
  private done = 0;
  private readonly started: number;
  private lastDraw = Number.NEGATIVE_INFINITY;
  /** Plain output: the highest 10% step printed, so a retried part does not print a step twice. */
  private printedStep = 0;
  private finished = false;
  private readonly now: () => number;

  constructor(
    private readonly out: ProgressOutput,
    private readonly label: string,
    private readonly total: number,
    private readonly options: ProgressOptions = {},
  ) {
    this.now = options.now ?? (() => performance.now());
    this.started = this.now();
    if (!options.quiet && !out.isTTY) out.write(`${plainProgressLine(this.state())}\n`);
  }

  private state(): ProgressState {
    return { label: this.label, done: this.done, total: this.total, elapsedMs: this.now() - this.started };
  }

  add(delta: number): void {
    if (this.finished) return;
    this.done = Math.min(this.total, Math.max(0, this.done + delta));
    if (this.options.quiet) return;
    if (this.out.isTTY) {
      const t = this.now();
      if (t - this.lastDraw >= (this.options.redrawMs ?? 100)) {
        this.lastDraw = t;
        this.draw();
      }
    } else if (stepOf(this.done, this.total) > this.printedStep) {
      this.printedStep = stepOf(this.done, this.total);
      this.out.write(`${plainProgressLine(this.state())}\n`);
    }
  }

  private draw(): void {
    this.out.write(`\r${progressLine(this.state(), this.out.columns || 80)}\x1b[K`);
  }

  /** Ends the line on a terminal; `ok` false leaves the bar where it stopped. */
  finish(ok = true): void {
    if (this.finished) return;
    this.finished = true;
    if (this.options.quiet) return;
    if (this.out.isTTY) {
      this.draw();
      this.out.write('\n');
    } else if (ok && percentOf(this.done, this.total) < 100) {
      this.out.write(`${plainProgressLine(this.state())}\n`);
    }
  }
}
