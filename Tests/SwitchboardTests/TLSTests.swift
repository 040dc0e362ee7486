import Foundation
import NIOSSL
import SwitchboardClient
import SwitchboardServer
import SwitchboardTesting
import Testing

@Suite("Native TLS")
struct TLSTests {
    @Test func wssWithASelfSignedCertificate() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sb-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let certificatePath = directory.appendingPathComponent("cert.pem").path
        let keyPath = directory.appendingPathComponent("key.pem").path
        try AuthenticationTests.run(
            "/usr/bin/openssl",
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
                "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout", keyPath, "-out", certificatePath,
            ])
        let chain = try NIOSSLCertificate.fromPEMFile(certificatePath)
        let server = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(try NIOSSLPrivateKey(file: keyPath, format: .pem)))

        try await withCluster(
            nodes: 2,
            configure: {
                $0.tls = server
                // Short, to see it act, but not so short that a loaded run's own TLS handshakes
                // miss it (4 s did, once, in a fresh-clone CI run with every suite at once).
                $0.handshakeTimeoutSeconds = 8
            }
        ) { cluster in
            var client = TLSConfiguration.makeClientConfiguration()
            client.trustRoots = .certificates(chain)
            let url = { (index: Int, user: String) in "wss://localhost:\(cluster.ports[index])/ws?user=\(user)" }
            let alice = try await TestClient(SwitchboardClient.connect(to: url(0, "alice"), timeout: .seconds(20), tls: client))
            let bob = try await TestClient(SwitchboardClient.connect(to: url(1, "bob"), timeout: .seconds(20), tls: client))
            try await alice.client.send(to: "bob", data: "\"over tls\"")
            _ = try await bob.message { $0.data == .string("over tls") }

            // Plain text to a TLS port gets nowhere; neither does a client that trusts nothing here.
            await #expect(throws: (any Error).self) {
                _ = try await SwitchboardClient.connect(to: cluster.ws(0, "user=plain"), timeout: .seconds(3))
            }
            await #expect(throws: (any Error).self) {
                _ = try await SwitchboardClient.connect(to: url(0, "stranger"), timeout: .seconds(3), tls: .makeClientConfiguration())
            }
            // TLS that never finishes (half a ClientHello) is closed by the request deadline, and
            // garbage by the TLS handler at once: neither holds the node (issue 13).
            let halfHello = try await RawWebSocket.open(port: cluster.ports[0])
            defer { halfHello.close() }
            try await halfHello.write([0x16, 0x03, 0x01, 0x00, 0xA5, 0x01, 0x00])
            let garbage = try await RawWebSocket.open(port: cluster.ports[0])
            defer { garbage.close() }
            try await garbage.write(Array("GET / HTTP/1.1\r\n\r\n".utf8))
            try await eventually("both closed", timeout: .seconds(20)) { halfHello.isClosed && garbage.isClosed }
            let nodes = try await bob.client.request(.presence(room: "none"))
            #expect(nodes.type == "ok")
        }
    }
}
