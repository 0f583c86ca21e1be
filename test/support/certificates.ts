/** Certificates for TLS tests, made by `openssl` in a temp dir: a private CA and server certificates for 127.0.0.1 and localhost. */
import { X509Certificate } from 'node:crypto'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tls from 'node:tls'

/** Every test server listens on 127.0.0.1, and some clients name it localhost. */
const SERVER_NAMES = 'subjectAltName=IP:127.0.0.1,DNS:localhost'

export interface IssuedCertificate {
  certPath: string
  keyPath: string
  cert: string
  key: string
  serial: string
  /** The subject's common name. */
  name: string
}

export interface TestCa {
  dir: string
  /** The CA's own certificate: what --ca, MLS_CA and agents.ca are given. */
  caPath: string
  ca: string
  /** A certificate for 127.0.0.1 and localhost signed by this CA, with common name `name`. */
  issue: (name: string) => IssuedCertificate
  /** A self-signed certificate for 127.0.0.1 and localhost, signed by no CA: its own file is the only CA that trusts it. */
  selfSigned: (name: string) => IssuedCertificate
}

function openssl(args: string[], cwd: string): void {
  const result = Bun.spawnSync(['openssl', ...args], { cwd, stdout: 'pipe', stderr: 'pipe' })
  if (result.exitCode !== 0) throw new Error(`openssl ${args.join(' ')} failed: ${result.stderr.toString()}`)
}

/** A private CA in a fresh temp dir. P-256 keys: quick to make, as good as RSA for a test. */
export function makeTestCa(label = 'Moonlight Test CA'): TestCa {
  const dir = mkdtempSync(join(tmpdir(), 'mls-tls-'))
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  openssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', `/CN=${label}`], dir)
  const caPath = join(dir, 'ca.pem')
  writeFileSync(join(dir, 'server.ext'), `${SERVER_NAMES}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`)
  return {
    dir,
    caPath,
    ca: readFileSync(caPath, 'utf8'),
    issue(name) {
      openssl(['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`], dir)
      openssl(
        [
          'x509',
          '-req',
          '-in',
          `${name}.csr`,
          '-CA',
          'ca.pem',
          '-CAkey',
          'ca.key',
          '-CAcreateserial',
          '-out',
          `${name}.pem`,
          '-days',
          '2',
          '-extfile',
          'server.ext',
        ],
        dir,
      )
      return issued(dir, name)
    },
    selfSigned(name) {
      openssl(['req', '-x509', ...ec, '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', `/CN=${name}`, '-addext', SERVER_NAMES], dir)
      return issued(dir, name)
    },
  }
}

function issued(dir: string, name: string): IssuedCertificate {
  const certPath = join(dir, `${name}.pem`)
  const keyPath = join(dir, `${name}.key`)
  const cert = readFileSync(certPath, 'utf8')
  return { certPath, keyPath, cert, key: readFileSync(keyPath, 'utf8'), serial: new X509Certificate(cert).serialNumber, name }
}

/** The certificate a new TLS connection to 127.0.0.1:port is shown (verified against `ca`): its common name and serial. */
export function peerCertificate(port: number, ca: string): Promise<{ name: string; serial: string }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
      const peer = socket.getPeerCertificate()
      resolve({ name: String(peer.subject.CN), serial: peer.serialNumber.toUpperCase() })
      socket.end()
    })
    socket.on('error', reject)
  })
}
