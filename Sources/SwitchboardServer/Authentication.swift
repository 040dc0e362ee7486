import Foundation
import JWTKit
import SwitchboardCore

/// Who a connection is and which rooms it may use.
struct Identity: Sendable {
    let user: String
    /// nil: every room. Otherwise names, where a trailing `*` matches a prefix.
    let rooms: [String]?
    /// May send `broadcast`: always without tokens; with tokens, only when the token says so.
    let mayBroadcast: Bool

    func mayUse(_ room: String) -> Bool {
        guard let rooms else { return true }
        return rooms.contains { pattern in
            pattern.hasSuffix("*") ? room.hasPrefix(pattern.dropLast()) : room == pattern
        }
    }
}

/// The claims a client token carries: `sub` (the user id), `exp` (required), optionally `nbf`,
/// optionally `rooms`, the rooms it may join, publish to and read the presence of, and
/// `broadcast: true` to allow broadcasts. Time claims are checked by
/// `TokenVerifier`, with its clock leeway.
struct ClientClaims: JWTPayload {
    var sub: SubjectClaim
    var exp: ExpirationClaim
    var nbf: NotBeforeClaim?
    var rooms: [String]?
    var broadcast: Bool?

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

struct AuthenticationError: Error {
    let message: String
}

/// How client tokens are checked: an HS256 secret, a public key (ES256 or RS256, PEM), or both.
public struct TokenKeys: Sendable {
    public var secret: String?
    public var publicKeyPEM: String?
    /// Clock skew forgiven on `exp` and `nbf`.
    public var leeway: Duration = .seconds(30)

    public init(secret: String? = nil, publicKeyPEM: String? = nil) {
        self.secret = secret
        self.publicKeyPEM = publicKeyPEM
    }

    public var isEmpty: Bool { secret == nil && publicKeyPEM == nil }

    /// Fails when the secret is too short or the PEM is neither an EC P-256 nor an RSA public key.
    public func validate() throws {
        if let secret, secret.utf8.count < TokenVerifier.minimumSecretBytes {
            throw TokenConfigurationError(message: "the HS256 secret must be at least \(TokenVerifier.minimumSecretBytes) bytes")
        }
        if let pem = publicKeyPEM, (try? ES256PublicKey(pem: pem)) == nil, (try? Insecure.RSA.PublicKey(pem: pem)) == nil {
            throw TokenConfigurationError(message: "the public key is neither an EC P-256 (ES256) nor an RSA (RS256) key in PEM form")
        }
    }
}

public struct TokenConfigurationError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Verifies client tokens. Each key accepts only its own algorithm, so a token signed "HS256"
/// with a public key as its secret, or `alg: none`, is refused.
public actor TokenVerifier {
    /// HS256 wants a key at least as long as its hash; shorter secrets are refused.
    public static let minimumSecretBytes = 32

    private let keys: TokenKeys
    private var collection: JWTKeyCollection?

    init(keys: TokenKeys) {
        self.keys = keys
    }

    private func keyCollection() async throws(AuthenticationError) -> JWTKeyCollection {
        if let collection { return collection }
        do {
            try keys.validate()
        } catch {
            throw AuthenticationError(message: "the server's token keys are unusable; no token can be accepted")
        }
        let collection = JWTKeyCollection()
        if let secret = keys.secret {
            await collection.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256, kid: "hs256")
        }
        if let pem = keys.publicKeyPEM {
            if let key = try? ES256PublicKey(pem: pem) {
                await collection.add(ecdsa: key, kid: "es256")
            } else if let key = try? Insecure.RSA.PublicKey(pem: pem) {
                await collection.add(rsa: key, digestAlgorithm: .sha256, kid: "rs256")
            }
        }
        self.collection = collection
        return collection
    }

    func identity(fromToken token: String?) async throws(AuthenticationError) -> Identity {
        guard let token, !token.isEmpty else {
            throw AuthenticationError(message: "a token is required: Authorization: Bearer <jwt> or ?token=<jwt>")
        }
        let collection = try await keyCollection()
        let claims: ClientClaims
        do {
            // Tokens carry no key id: try each key, each checking its own algorithm.
            claims = try await collection.verify(token, as: ClientClaims.self, iteratingKeys: true)
        } catch let error as JWTError {
            throw AuthenticationError(message: "invalid token: \(Self.reason(error))")
        } catch {
            throw AuthenticationError(message: "invalid token")
        }
        let now = Date()
        let leeway = TimeInterval(keys.leeway.components.seconds)
        guard now < claims.exp.value.addingTimeInterval(leeway) else {
            throw AuthenticationError(message: "invalid token: expired")
        }
        if let nbf = claims.nbf, now.addingTimeInterval(leeway) < nbf.value {
            throw AuthenticationError(message: "invalid token: not valid yet (nbf)")
        }
        guard Name.isValid(claims.sub.value) else {
            throw AuthenticationError(message: "the token's sub is not a valid user id")
        }
        guard Name.isValidUser(claims.sub.value) else {
            throw AuthenticationError(message: "the token's sub '\(Name.reservedUser)' is reserved for the HTTP API")
        }
        return Identity(user: claims.sub.value, rooms: claims.rooms, mayBroadcast: claims.broadcast == true)
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
