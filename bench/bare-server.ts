import Fastify from 'fastify';

/**
 * The baseline for the API figures: a bare Fastify route answering `BARE_BODY` as JSON, in its own
 * process like the service, so both are measured the same way. Prints its address when listening.
 */
const body = process.env.BARE_BODY ?? '{}';
const app = Fastify({ logger: false });
app.get('/bare', async (_req, reply) =>
  reply.header('content-type', 'application/json; charset=utf-8').send(body),
);
app.get('/healthz', async () => ({ ok: true }));
const address = await app.listen({ port: Number(process.env.PORT ?? 0), host: '127.0.0.1' });
process.stdout.write(`${address}\n`);
process.on('SIGTERM', () => {
  app.close().then(() => process.exit(0));
});
