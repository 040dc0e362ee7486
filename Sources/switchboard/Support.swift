import ArgumentParser
import Foundation
import Logging
import NIOSSL
import ServiceLifecycle
import SwitchboardServer

#if canImport(Glibc)
import Glibc
#endif

/// Native TLS from PEM files: both or neither.
func loadTLS(certificate: String?, key: String?) throws -> TLSConfiguration? {
    switch (certificate, key) {
    case (nil, nil):
        return nil
    case (let certificate?, let key?):
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(certificate).map { NIOSSLCertificateSource.certificate($0) }
            let privateKey = try NIOSSLPrivateKey(file: key, format: .pem)
            return TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(privateKey))
        } catch {
            throw ValidationError("--tls-cert/--tls-key: cannot load \(certificate) and \(key): \(error)")
        }
    default:
        throw ValidationError("--tls-cert and --tls-key go together")
    }
}

/// One clear warning when a node accepts anyone.
func warnIfOpen(_ configuration: NodeConfiguration, logger: Logger) {
    var open: [String] = []
    if configuration.tokens.isEmpty { open.append("WebSocket clients pick any user id (no --jwt-secret or --jwt-public-key)") }
    if configuration.apiKey == nil { open.append("the HTTP API needs no key (no --api-key)") }
    if !open.isEmpty {
        logger.warning("running open: \(open.joined(separator: "; "))")
    }
}

/// Runs the services until SIGTERM or SIGINT, which drain every node before the process exits 0.
func runUntilSignalled(_ services: [any Service], logger: Logger) async throws {
    let group = ServiceGroup(
        configuration: .init(
            services: services.map { .init(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
    try await group.run()
}

func randomSuffix() -> String {
    String((0..<6).map { _ in "abcdefghijklmnopqrstuvwxyz0123456789".randomElement()! })
}

/// The operator's line on standard output (OPERATIONS: `listening on http://HOST:PORT (node ID)`),
/// flushed at once so that whoever waits for it sees it.
@Sendable func announce(_ line: String) {
    print(line)
    fflush(nil)
}
