import { createPrivateKey, X509Certificate } from 'node:crypto'
import { type Config, ConfigError, readAtMost } from '../config/config.ts'

/** The PEM files a config names, read: the server's own certificate, and the CA HTTPS agents are verified against. */
export interface ConfiguredTls {
  certificate?: CertificatePair
  agentCa?: string
}

/** Reads and checks the files `tls` and `agents.ca` name, at start-up and on every reload; a bad one is a ConfigError naming it. */
export function readConfiguredTls(config: Pick<Config, 'tls' | 'agents'>): ConfiguredTls {
  try {
    return {
      ...(config.tls ? { certificate: readCertificatePair(config.tls.cert, config.tls.key, 'tls.cert', 'tls.key') } : {}),
      ...(config.agents.ca ? { agentCa: readCaBundle(config.agents.ca, 'agents.ca') } : {}),
    }
  } catch (error) {
    if (error instanceof TlsFileError) throw new ConfigError(error.message)
    throw error
  }
}

/** A certificate chain and its private key, as PEM text: what `Bun.serve`'s `tls` option takes. */
export interface CertificatePair {
  cert: string
  key: string
}

/** A PEM file that cannot serve: missing, unreadable, not PEM, or a key that is not the certificate's. One line, naming the file. */
export class TlsFileError extends Error {
  override name = 'TlsFileError'
}

/** Far beyond any certificate chain or CA bundle; a wrong path such as /dev/zero must fail, not fill memory. */
const MAX_PEM_BYTES = 1024 * 1024

/**
 * Reads a certificate chain and its key and checks them before anything serves with them: the first
 * certificate parses and the key is its own. `certLabel` and `keyLabel` name them in errors (`tls.cert`, `--tls-cert`).
 */
export function readCertificatePair(certPath: string, keyPath: string, certLabel: string, keyLabel: string): CertificatePair {
  const cert = readPem(certPath, certLabel)
  const key = readPem(keyPath, keyLabel)
  const certificate = parseCertificate(cert, certPath, certLabel)
  checkEveryCertificate(cert, certPath, certLabel)
  let privateKey: ReturnType<typeof createPrivateKey>
  try {
    privateKey = createPrivateKey(key)
  } catch {
    throw new TlsFileError(`${keyLabel} ${keyPath}: not a PEM private key`)
  }
  if (!certificate.checkPrivateKey(privateKey)) throw new TlsFileError(`${keyLabel} ${keyPath}: not the key of the certificate in ${certLabel} ${certPath}`)
  return { cert, key }
}

/** Reads a PEM bundle of CA certificates (a private CA) to verify peers against; it must hold at least one certificate. */
export function readCaBundle(path: string, label: string): string {
  const bundle = readPem(path, label)
  parseCertificate(bundle, path, label)
  checkEveryCertificate(bundle, path, label)
  return bundle
}

/** The certificate's serial and subject, for the log line that says which certificate is served now. */
export function describeCertificate(pair: CertificatePair): string {
  const certificate = new X509Certificate(pair.cert)
  return `${certificate.subject.replace(/\n/g, ', ')} (serial ${certificate.serialNumber}, valid until ${certificate.validTo})`
}

/**
 * Why clients will refuse the certificate on its dates (expired, or not valid yet), naming the file; undefined when
 * today is within them. Served all the same (the old one may be no better): the log says so rather than the clients.
 */
export function certificateDatesWarning(pair: CertificatePair, certPath: string, now: Date): string | undefined {
  const certificate = new X509Certificate(pair.cert)
  if (now > certificate.validToDate) return `TLS: the certificate in tls.cert ${certPath} expired on ${certificate.validTo}: clients will refuse it`
  if (now < certificate.validFromDate)
    return `TLS: the certificate in tls.cert ${certPath} is not valid before ${certificate.validFrom}: clients will refuse it until then`
  return undefined
}

/**
 * Only the first certificate of a chain is parsed to be served; a damaged one after it (an intermediate, a CA of a
 * bundle) would be dropped without a word, and clients that need it could not verify the server (or agents).
 */
function checkEveryCertificate(pem: string, path: string, label: string): void {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? []
  for (const [index, block] of blocks.entries()) {
    try {
      new X509Certificate(block)
    } catch {
      throw new TlsFileError(`${label} ${path}: certificate ${index + 1} of ${blocks.length} is not a valid PEM certificate`)
    }
  }
}

function readPem(path: string, label: string): string {
  let text: string | undefined
  try {
    text = readAtMost(path, MAX_PEM_BYTES)
  } catch (error) {
    const { code, message } = error as NodeJS.ErrnoException
    throw new TlsFileError(`${label} ${path}: cannot read it (${code ?? message})`)
  }
  if (text === undefined) throw new TlsFileError(`${label} ${path}: too large for a PEM file (over ${MAX_PEM_BYTES / 1024} KiB)`)
  return text
}

function parseCertificate(pem: string, path: string, label: string): X509Certificate {
  try {
    return new X509Certificate(pem)
  } catch {
    throw new TlsFileError(`${label} ${path}: not a PEM certificate`)
  }
}
