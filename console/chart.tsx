/** Bar charts with chart.js (only the parts used are registered, so the bundle carries nothing else). */
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  type ChartDataset,
  Legend,
  LinearScale,
  Tooltip,
} from 'chart.js';
import { useEffect, useRef } from 'preact/hooks';

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Legend, Tooltip);

/** Fixed colours per update status, so a status looks the same on every chart. */
export const STATUS_COLOURS: Record<string, string> = {
  scheduled: '#b0b7c3',
  offered: '#7aa6d8',
  initiated: '#4c8bd1',
  downloading: '#2f6fb8',
  downloaded: '#275f9e',
  verifying: '#6a5acd',
  installing: '#8e44ad',
  completed: '#2e8b57',
  failed: '#c0392b',
  verification_failed: '#e74c3c',
  rolled_back: '#d35400',
  rejected: '#e67e22',
  cancelled: '#7f8c8d',
  timed_out: '#a04000',
};
const PALETTE = ['#2f6fb8', '#2e8b57', '#8e44ad', '#d35400', '#16a085', '#c0392b', '#7f8c8d'];
export const colourOf = (key: string, i: number) => STATUS_COLOURS[key] ?? PALETTE[i % PALETTE.length]!;

export function BarChart(props: {
  label: string;
  labels: string[];
  datasets: { label: string; data: number[]; colour: string }[];
  stacked?: boolean;
  horizontal?: boolean;
}) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const chart = useRef<Chart<'bar', number[], string> | null>(null);
  const datasets: ChartDataset<'bar', number[]>[] = props.datasets.map((d) => ({
    label: d.label,
    data: d.data,
    backgroundColor: d.colour,
  }));
  useEffect(() => {
    if (!canvas.current) return;
    chart.current = new Chart<'bar', number[], string>(canvas.current, {
      type: 'bar',
      data: { labels: props.labels, datasets },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        indexAxis: props.horizontal ? 'y' : 'x',
        scales: {
          x: { stacked: props.stacked ?? false, ticks: { precision: 0 } },
          y: { stacked: props.stacked ?? false, beginAtZero: true, ticks: { precision: 0 } },
        },
        plugins: { legend: { position: 'bottom' } },
      },
    });
    return () => chart.current?.destroy();
  }, []);
  useEffect(() => {
    const c = chart.current;
    if (!c) return;
    c.data.labels = props.labels;
    c.data.datasets = datasets;
    c.update('none');
  });
  return (
    <div class="chart">
      <canvas ref={canvas} role="img" aria-label={props.label} />
    </div>
  );
}
