import Foundation
import JWTKit
import SwitchboardCore

/// Who a connection is and which rooms it may use.
struct Identity: Sendable {
    let user: String
    /// nil: every room. Otherwise names, where a trailing `*` matches a prefix.
    let rooms: [String]?

    func mayUse(_ room: String) -> Bool {
        guard let rooms else { return true }
        return rooms.contains { pattern in
            pattern.hasSuffix("*") ? room.hasPrefix(pattern.dropLast()) : room == pattern
        }
    }
}

/// The claims a client token carries: `sub` (the user id), `exp` (required), and optionally
/// `rooms`, the rooms it may join and publish to.
struct ClientClaims: JWTPayload {
    var sub: SubjectClaim
    var exp: ExpirationClaim
    var rooms: [String]?

    func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp.verifyNotExpired()
    }
}

struct AuthenticationError: Error {
    let message: String
}

/// Verifies client tokens signed with the node's HS256 secret.
public actor TokenVerifier {
    /// HS256 wants a key at least as long as its hash; shorter secrets are refused.
    public static let minimumSecretBytes = 32

    private let secret: String
    private var keys: JWTKeyCollection?

    init(secret: String) {
        self.secret = secret
    }

    private func keyCollection() async -> JWTKeyCollection {
        if let keys { return keys }
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        self.keys = keys
        return keys
    }

    func identity(fromToken token: String?) async throws(AuthenticationError) -> Identity {
        guard secret.utf8.count >= Self.minimumSecretBytes else {
            throw AuthenticationError(message: "the server's token secret is too short; no token can be accepted")
        }
        guard let token, !token.isEmpty else {
            throw AuthenticationError(message: "a token is required: Authorization: Bearer <jwt> or ?token=<jwt>")
        }
        let claims: ClientClaims
        do {
            claims = try await keyCollection().verify(token, as: ClientClaims.self)
        } catch let error as JWTError {
            throw AuthenticationError(message: "invalid token: \(Self.reason(error))")
        } catch {
            throw AuthenticationError(message: "invalid token")
        }
        guard Name.isValid(claims.sub.value) else {
            throw AuthenticationError(message: "the token's sub is not a valid user id")
        }
        return Identity(user: claims.sub.value, rooms: claims.rooms)
    }

    private static func reason(_ error: JWTError) -> String {
        switch error.errorType {
        case .claimVerificationFailure: "expired"
        case .signatureVerificationFailed: "bad signature"
        case .malformedToken: "malformed"
        default: "not accepted"
        }
    }
}
