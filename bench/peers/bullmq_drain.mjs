// BullMQ on the same Valkey, for `make bench-peers`: `add N` queues N no-op jobs (untimed),
// `work` drains them with one Worker at concurrency 100 and prints {"jobs", "seconds"}.
import { Queue, Worker } from "bullmq";

const [mode, count] = process.argv.slice(2);
const url = new URL(process.env.PEER_REDIS_URL);
const connection = { host: url.hostname, port: Number(url.port), maxRetriesPerRequest: null };
const name = "bench-bullmq";

if (mode === "add") {
  const queue = new Queue(name, { connection });
  const total = Number(count);
  for (let start = 0; start < total; start += 1000) {
    const jobs = [];
    for (let i = start; i < Math.min(total, start + 1000); i++) {
      // Finished jobs are removed, as a drain leaves nothing behind: the lightest setting.
      jobs.push({ name: "noop", data: { i }, opts: { removeOnComplete: true, removeOnFail: true } });
    }
    await queue.addBulk(jobs);
  }
  await queue.close();
  console.log(JSON.stringify({ jobs: total }));
} else {
  const queue = new Queue(name, { connection });
  const { waiting } = await queue.getJobCounts("waiting");
  let done = 0;
  const started = performance.now();
  await new Promise((resolve) => {
    const worker = new Worker(name, async () => {}, { connection, concurrency: 100 });
    worker.on("completed", async () => {
      done += 1;
      if (done === waiting) {
        const seconds = (performance.now() - started) / 1000;
        await worker.close();
        console.log(JSON.stringify({ jobs: done, seconds }));
        resolve();
      }
    });
  });
  await queue.close();
}
