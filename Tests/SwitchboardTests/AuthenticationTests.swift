import Foundation
import JWTKit
import SwitchboardClient
import SwitchboardCore
import SwitchboardProtocol
import SwitchboardTesting
import Testing

/// Client tokens (HS256): identity from `sub`, 401 before any upgrade, the `rooms` claim.
@Suite("Token authentication")
struct AuthenticationTests {
    static let secret = "test-secret-0123456789abcdef-0123456789"

    struct Claims: JWTPayload {
        var sub: SubjectClaim
        var exp: ExpirationClaim?
        var nbf: NotBeforeClaim?
        var rooms: [String]?
        var broadcast: Bool?
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    static func token(
        sub: String = "alice", expiresIn: TimeInterval? = 60, rooms: [String]? = nil, broadcast: Bool? = nil, secret: String = secret
    ) async throws -> String {
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        return try await keys.sign(
            Claims(
                sub: .init(value: sub), exp: expiresIn.map { .init(value: Date().addingTimeInterval($0)) }, rooms: rooms,
                broadcast: broadcast))
    }

    static func claims(sub: String, expiresIn: TimeInterval = 60, notBefore: TimeInterval? = nil) -> Claims {
        Claims(
            sub: .init(value: sub), exp: .init(value: Date().addingTimeInterval(expiresIn)),
            nbf: notBefore.map { .init(value: Date().addingTimeInterval($0)) })
    }

    /// Connects with `token` and answers the welcome's user, or the HTTP status line it got.
    static func attempt(_ port: Int, token: String) async throws -> String {
        let raw = try await RawWebSocket.connect(port: port, path: "/ws?token=\(token)")
        defer { raw.close() }
        try await raw.waitForAnswer("an answer")
        if raw.received.hasPrefix("HTTP/1.1 101"), let json = raw.received.firstIndex(of: "{") {
            // The welcome object: up to the brace that closes the first one.
            var depth = 0
            let object = raw.received[json...].prefix { character in
                if character == "{" { depth += 1 }
                if character == "}" { depth -= 1 }
                return depth > 0
            }
            return (try? JSONValue.parse(String(object) + "}"))?["user"]?.string ?? "?"
        }
        return String(raw.received.prefix(12))
    }

    static func base64URL(_ text: String) -> String {
        Data(text.utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    func withSecuredNode(_ body: (TestCluster) async throws -> Void) async throws {
        try await withCluster(nodes: 2, configure: { $0.jwtSecret = Self.secret }, body)
    }

    @Test func theTokenNamesTheUser() async throws {
        try await withSecuredNode { cluster in
            let viaHeader = try await SwitchboardClient.connect(
                to: cluster.ws(0, "user=mallory"), headers: ["Authorization": "Bearer \(try await Self.token(sub: "alice"))"])
            #expect(viaHeader.welcome.user == "alice")
            let viaQuery = try await SwitchboardClient.connect(to: cluster.ws(1, "token=\(try await Self.token(sub: "bob"))"))
            #expect(viaQuery.welcome.user == "bob")
            try await viaQuery.send(to: "alice", data: "1")
            await viaHeader.close()
            await viaQuery.close()
        }
    }

    @Test func badTokensGet401BeforeAnyUpgrade() async throws {
        let header = Self.base64URL(#"{"alg":"none","typ":"JWT"}"#)
        let payload = Self.base64URL(#"{"sub":"alice","exp":\#(Int(Date().timeIntervalSince1970) + 60)}"#)
        let cases: [(String, String?)] = [
            ("missing", nil),
            ("malformed", "not.a.jwt"),
            ("wrongly signed", try await Self.token(secret: "another-secret-0123456789abcdef-012345")),
            ("expired", try await Self.token(expiresIn: -60)),
            ("without exp", try await Self.token(expiresIn: nil)),
            ("alg none", "\(header).\(payload)."),
            ("bad sub", try await Self.token(sub: "not a name")),
        ]
        try await withSecuredNode { cluster in
            for (name, token) in cases {
                let raw = try await RawWebSocket.connect(port: cluster.ports[0], path: "/ws" + (token.map { "?token=\($0)" } ?? ""))
                defer { raw.close() }
                try await raw.waitForAnswer("an answer to the \(name) token")
                #expect(raw.received.hasPrefix("HTTP/1.1 401"), "\(name)")
                #expect(raw.received.lowercased().contains("content-type: application/json"), "\(name)")
                let body = raw.received.components(separatedBy: "\r\n\r\n").dropFirst().first ?? ""
                let json = try? JSONValue.parse(body)
                #expect(json?["error"] == .string("unauthorized"), "\(name): \(body)")
                #expect(json?["message"]?.string?.isEmpty == false, "\(name)")
                #expect(!raw.received.contains("HTTP/1.1 101"), "\(name)")
            }
        }
    }

    @Test func publicKeysES256AndRS256() async throws {
        // ES256: a key pair made here.
        let ecPrivate = ES256PrivateKey()
        let ecSigner = JWTKeyCollection()
        await ecSigner.add(ecdsa: ecPrivate)
        try await withCluster(nodes: 1, configure: { $0.tokens.publicKeyPEM = ecPrivate.publicKey.pemRepresentation }) { cluster in
            let token1 = try await ecSigner.sign(Self.claims(sub: "ec-user"))
            #expect(try await Self.attempt(cluster.ports[0], token: token1) == "ec-user")
            // HS256 with the public key as its secret: the classic algorithm confusion.
            let confused = JWTKeyCollection()
            await confused.add(hmac: HMACKey(from: ecPrivate.publicKey.pemRepresentation), digestAlgorithm: .sha256)
            let token2 = try await confused.sign(Self.claims(sub: "mallory"))
            #expect(try await Self.attempt(cluster.ports[0], token: token2) == "HTTP/1.1 401")
            let token3 = try await Self.token(sub: "hs-user")
            #expect(try await Self.attempt(cluster.ports[0], token: token3) == "HTTP/1.1 401")
        }
        // RS256: a key made by openssl, as an operator would.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sb-rsa-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let privatePath = directory.appendingPathComponent("key.pem").path, publicPath = directory.appendingPathComponent("pub.pem").path
        try Self.run("/usr/bin/openssl", ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", privatePath])
        try Self.run("/usr/bin/openssl", ["pkey", "-in", privatePath, "-pubout", "-out", publicPath])
        let rsaSigner = JWTKeyCollection()
        await rsaSigner.add(
            rsa: try Insecure.RSA.PrivateKey(pem: try String(contentsOfFile: privatePath, encoding: .utf8)), digestAlgorithm: .sha256)
        let publicPEM = try String(contentsOfFile: publicPath, encoding: .utf8)
        try await withCluster(nodes: 1, configure: { $0.tokens.publicKeyPEM = publicPEM }) { cluster in
            let token4 = try await rsaSigner.sign(Self.claims(sub: "rsa-user"))
            #expect(try await Self.attempt(cluster.ports[0], token: token4) == "rsa-user")
            let token5 = try await ecSigner.sign(Self.claims(sub: "ec-user"))
            #expect(try await Self.attempt(cluster.ports[0], token: token5) == "HTTP/1.1 401")
        }
    }

    @Test func notBeforeAndClockLeeway() async throws {
        try await withCluster(
            nodes: 1,
            configure: {
                $0.jwtSecret = Self.secret
                $0.tokens.leeway = .seconds(30)
            }
        ) { cluster in
            let keys = JWTKeyCollection()
            await keys.add(hmac: HMACKey(from: Self.secret), digestAlgorithm: .sha256)
            let port = cluster.ports[0]
            let token6 = try await keys.sign(Self.claims(sub: "a", notBefore: 600))
            #expect(try await Self.attempt(port, token: token6) == "HTTP/1.1 401")
            let token7 = try await keys.sign(Self.claims(sub: "b", notBefore: 10))
            #expect(try await Self.attempt(port, token: token7) == "b")
            let token8 = try await keys.sign(Self.claims(sub: "c", expiresIn: -10))
            #expect(try await Self.attempt(port, token: token8) == "c")
            let token9 = try await keys.sign(Self.claims(sub: "d", expiresIn: -120))
            #expect(try await Self.attempt(port, token: token9) == "HTTP/1.1 401")
        }
    }

    @Test func onlyAllowedBrowserOriginsConnect() async throws {
        try await withCluster(nodes: 1, configure: { $0.allowedOrigins = ["https://app.example.com"] }) { cluster in
            for (origin, expected) in [
                ("https://app.example.com", "HTTP/1.1 101"), ("https://evil.example", "HTTP/1.1 403"), (nil, "HTTP/1.1 101"),
            ] {
                let raw = try await RawWebSocket.connect(port: cluster.ports[0], path: "/ws?user=o", origin: origin)
                defer { raw.close() }
                try await raw.waitForAnswer("an answer")
                #expect(raw.received.hasPrefix(expected), "\(origin ?? "no origin")")
                if expected.hasSuffix("403") { #expect(raw.received.contains(#""error":"forbidden""#)) }
            }
            let metrics = try await http("GET", cluster.http(0, "/metrics")).body
            #expect(metrics.contains("switchboard_handshakes_refused_total 1"))
        }
    }

    static func run(_ executable: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw TimedOut(what: "\(executable) to succeed") }
    }

    @Test func theRoomsClaimLimitsJoinPublishAndPresence() async throws {
        try await withSecuredNode { cluster in
            let token = try await Self.token(sub: "alice", rooms: ["lobby", "team-*"])
            let alice = try await TestClient(SwitchboardClient.connect(to: cluster.ws(0, "token=\(token)")))
            try await alice.client.join("lobby")
            try await alice.client.join("team-red")
            for request: ClientCommand in [
                .join(room: "secret"), .join(room: "team"), .publish(room: "secret", data: RawJSON("1")), .presence(room: "secret"),
                // History and resume need the right to join (1.1).
                .history(room: "secret"), .join(room: "secret", since: StreamPosition(epoch: "e", offset: 0)),
            ] {
                let reply = try await alice.client.request(request)
                #expect(reply.type == "error" && reply.code == "forbidden", "\(request)")
            }
            try await alice.client.publish("team-red", data: "\"ok\"")
            _ = try await alice.message { $0.room == "team-red" }
            #expect(try await alice.client.presence("team-red") == ["alice"])
        }
    }
}
