import ArgumentParser
import Foundation
import SwitchboardCore
import SwitchboardServer

/// The options every node has, whether it runs alone (`serve`) or beside others in one process
/// (`cluster`). Defaults are the library's (`NodeConfiguration`), shown by `--help`.
struct NodeOptions: ParsableArguments {
    private static let defaults = NodeConfiguration(nodeID: "defaults")

    @Option(help: "Address to listen on.") var host = Self.defaults.host
    @Option(help: "HS256 secret for client tokens (at least 32 bytes).") var jwtSecret: String?
    @Option(help: "PEM file with the public key of client tokens (ES256 or RS256).") var jwtPublicKey: String?
    @Option(help: "Seconds of clock skew forgiven on a token's exp and nbf.") var tokenLeeway = 30
    @Option(help: "Protects /api/* with Authorization: Bearer KEY.") var apiKey: String?
    @Option(help: "Browser origins allowed to connect, comma-separated (default: any).") var allowedOrigins: String?
    @Option(help: "PEM certificate chain for native TLS (wss://); needs --tls-key.") var tlsCert: String?
    @Option(help: "PEM private key for native TLS.") var tlsKey: String?
    @Option(help: "Seconds between server pings.") var heartbeat = Self.defaults.heartbeatSeconds
    @Option(help: "Largest client message in bytes.") var maxFrame = Self.defaults.maxFrameBytes
    @Option(help: "Bytes queued for one slow connection before it is closed.") var maxBuffered = Self.defaults.maxBufferedBytes
    @Option(help: "WebSockets this node accepts.") var maxConnections = Self.defaults.maxConnections
    @Option(help: "WebSockets one user may hold on this node.") var maxConnectionsPerUser = Self.defaults.maxConnectionsPerUser
    @Option(help: "Rooms one connection may be in.") var maxRooms = Self.defaults.maxRoomsPerConnection
    @Option(help: "Subscribers of a room on this node above which its joined/left events are not sent them (0: no limit).")
    var presenceEventsLimit = Self.defaults.presenceEventsLimit
    @Option(help: "Frames a connection may send at once.") var rateBurst = Self.defaults.rateBurst
    @Option(help: "Frames per second a connection may keep sending.") var ratePerSecond = Self.defaults.ratePerSecond
    @Option(help: "Seconds a connection may take to send a complete request, and an idle keep-alive may last.")
    var handshakeTimeout = Self.defaults.handshakeTimeoutSeconds
    @Option(help: "Accepted sockets that have sent nothing yet, at most.") var maxPendingHandshakes = Self.defaults.maxPendingHandshakes
    @OptionGroup var history: HistoryOptions

    /// A node's configuration with these options; the library checks it (`validate()`).
    func configuration(nodeID: String, port: Int) throws -> NodeConfiguration {
        var configuration = NodeConfiguration(nodeID: nodeID)
        configuration.host = host
        configuration.port = port
        configuration.apiKey = apiKey
        configuration.jwtSecret = jwtSecret
        if let path = jwtPublicKey {
            do {
                configuration.tokens.publicKeyPEM = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                throw ValidationError("--jwt-public-key: cannot read \(path): \(error.localizedDescription)")
            }
        }
        configuration.tokens.leeway = .seconds(tokenLeeway)
        configuration.tls = try loadTLS(certificate: tlsCert, key: tlsKey)
        configuration.allowedOrigins = allowedOrigins.map {
            Set($0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
        }
        configuration.heartbeatSeconds = heartbeat
        configuration.maxFrameBytes = maxFrame
        configuration.maxBufferedBytes = maxBuffered
        configuration.maxConnections = maxConnections
        configuration.maxConnectionsPerUser = maxConnectionsPerUser
        configuration.maxRoomsPerConnection = maxRooms
        configuration.presenceEventsLimit = presenceEventsLimit
        configuration.rateBurst = rateBurst
        configuration.ratePerSecond = ratePerSecond
        configuration.handshakeTimeoutSeconds = handshakeTimeout
        configuration.maxPendingHandshakes = maxPendingHandshakes
        do {
            try configuration.validate()
        } catch {
            throw ValidationError(error.message)
        }
        return configuration
    }
}

/// `--history-size` and `--history-ttl`, for nodes and for the hub (which keeps the hub
/// backplane's history).
struct HistoryOptions: ParsableArguments {
    @Option(help: "Messages kept per room and per inbox for resume and history; 0 turns history off.")
    var historySize = HistoryPolicy.standard.size
    @Option(help: "Seconds a message is kept in history.") var historyTtl = HistoryPolicy.standard.ttlSeconds

    func policy() throws -> HistoryPolicy {
        guard (0...100_000).contains(historySize) else { throw ValidationError("--history-size must be 0 to 100000") }
        guard historyTtl >= 1 else { throw ValidationError("--history-ttl must be at least 1 second") }
        return historySize == 0 ? .off : HistoryPolicy(size: historySize, ttlSeconds: historyTtl)
    }
}
