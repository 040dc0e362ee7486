import Foundation
import JWTKit
import SwitchboardClient
import SwitchboardCore
import SwitchboardProtocol
import Testing

/// Client tokens (HS256): identity from `sub`, 401 before any upgrade, the `rooms` claim.
@Suite("Token authentication")
struct AuthenticationTests {
    static let secret = "test-secret-0123456789abcdef-0123456789"

    struct Claims: JWTPayload {
        var sub: SubjectClaim
        var exp: ExpirationClaim?
        var rooms: [String]?
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    static func token(sub: String = "alice", expiresIn: TimeInterval? = 60, rooms: [String]? = nil, secret: String = secret) async throws -> String {
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        return try await keys.sign(Claims(sub: .init(value: sub), exp: expiresIn.map { .init(value: Date().addingTimeInterval($0)) }, rooms: rooms))
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
                try await eventually("an answer to the \(name) token") { raw.received.contains("}") || raw.isClosed }
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

    @Test func theRoomsClaimLimitsJoinAndPublish() async throws {
        try await withSecuredNode { cluster in
            let token = try await Self.token(sub: "alice", rooms: ["lobby", "team-*"])
            let alice = try await TestClient(SwitchboardClient.connect(to: cluster.ws(0, "token=\(token)")))
            try await alice.client.join("lobby")
            try await alice.client.join("team-red")
            for request: ClientCommand in [.join(room: "secret"), .join(room: "team"), .publish(room: "secret", data: RawJSON("1"))] {
                let reply = try await alice.client.request(request)
                #expect(reply.type == "error" && reply.code == "forbidden", "\(request)")
            }
            try await alice.client.publish("team-red", data: "\"ok\"")
            _ = try await alice.message { $0.room == "team-red" }
            #expect(try await alice.client.presence("secret").isEmpty)
        }
    }
}
