/** Binding and closing the local cloud's servers, shared by the gateway, the emulators, the broker and the shim. */
import type { Server } from 'node:https';
import type { Server as NetServer } from 'node:net';

/** Everything local binds the loopback interface only. */
export const LOCALHOST = '127.0.0.1';

/** Listens, and turns EADDRINUSE into an error that says what to do. */
export function listen(server: NetServer, port: number, host = LOCALHOST): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      server.off('listening', onListening);
      reject(
        err.code === 'EADDRINUSE'
          ? new Error(
              `Port ${port} on ${host} is already in use; stop whatever holds it or choose another port`,
              {
                cause: err,
              },
            )
          : err,
      );
    };
    const onListening = () => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(port, host);
  });
}

/** Stops accepting, closes idle keep-alive connections at once and cuts the rest after a short grace. */
export function closeServer(server: Server, graceMs = 2000): Promise<void> {
  return new Promise((resolve, reject) => {
    if (!server.listening) return resolve();
    const timer = setTimeout(() => server.closeAllConnections(), graceMs);
    timer.unref();
    server.close((err) => {
      clearTimeout(timer);
      if (err) reject(err);
      else resolve();
    });
    server.closeIdleConnections();
  });
}
