import HummingbirdTLS
import NIOSSL
import SwitchboardCore

/// Everything a node is told at start. Defaults follow docs/PROTOCOL.md and docs/SECURITY.md.
public struct NodeConfiguration: Sendable {
    public var host: String = "127.0.0.1"
    /// 0 picks a free port (tests); the bound port is reported by `SwitchboardNode.listening()`.
    public var port: Int = 8080
    public var nodeID: String
    /// The URL clients should use for this node; defaults to `ws://host:port/ws`.
    public var advertiseURL: String?
    /// Seconds between server pings; a connection that misses a pong is closed.
    public var heartbeatSeconds: Int = 25
    /// Largest client message, after reassembly of fragments (bigger: close 1009).
    public var maxFrameBytes: Int = 65536
    /// Bound on bytes queued for one connection; a connection that exceeds it is closed (1008).
    public var maxBufferedBytes: Int = 4 << 20
    /// Token bucket per connection: burst size and frames per second sustained.
    public var rateBurst: Int = 2000
    public var ratePerSecond: Int = 2000
    /// Consecutive bad or rate-limited frames after which a connection is closed with 1008.
    public var maxStrikes: Int = 100
    /// WebSockets this node accepts; more get 503. One process may hold at most 20000 open files
    /// on this kind of machine, and running out must never crash a node: TCP accepts are capped a
    /// little above this too.
    public var maxConnections: Int = 19000
    /// WebSockets one user may hold on this node; more get 429.
    public var maxConnectionsPerUser: Int = 100
    /// Seconds an accepted socket may stay silent before it is closed.
    public var handshakeTimeoutSeconds: Int = 10
    /// Accepted sockets that have not sent anything yet, at most; more are closed on arrival.
    public var maxPendingHandshakes: Int = 1000
    /// Rooms one connection may be in; more joins get `forbidden`.
    public var maxRoomsPerConnection: Int = 1000
    /// A room's `joined`/`left` go to its subscribers on this node only while the node holds at
    /// most this many of them; 0 (the default, as the protocol says): always. A crowd of n
    /// joining one room is otherwise announced n²/2 times (docs/PROTOCOL.md, "Large rooms").
    public var presenceEventsLimit: Int = 0
    /// How client tokens are checked; when set, every WebSocket needs a valid token.
    public var tokens = TokenKeys()
    /// HS256 secret of client tokens (shorthand for `tokens.secret`).
    public var jwtSecret: String? {
        get { tokens.secret }
        set { tokens.secret = newValue }
    }
    /// Browser origins allowed to open WebSockets (e.g. `https://app.example.com`); nil allows
    /// any. Clients that send no `Origin` (not browsers) are not affected.
    public var allowedOrigins: Set<String>?
    /// Native TLS (`wss://`, `https://`); nil serves plain text (e.g. behind nginx).
    public var tls: TLSConfiguration?
    /// Protects `/api/*` when set.
    public var apiKey: String?
    /// How long a drain waits for connections to close before leaving the cluster anyway.
    public var drainTimeoutSeconds: Int = 10

    public init(nodeID: String) {
        self.nodeID = nodeID
    }

    func webSocketURL(boundPort: Int) -> String {
        advertiseURL ?? "\(tls == nil ? "ws" : "wss")://\(host):\(boundPort)/ws"
    }
}

/// A configuration a node cannot run with; the message names the option.
public struct NodeConfigurationError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

extension NodeConfiguration {
    /// Checks every value; `SwitchboardNode.init` calls it, so a library user gets the same
    /// checks as the command line.
    public func validate() throws(NodeConfigurationError) {
        func check(_ condition: Bool, _ message: String) throws(NodeConfigurationError) {
            guard condition else { throw NodeConfigurationError(message: message) }
        }
        try check(Name.isValid(nodeID), "--node-id must be 1 to 128 characters of A-Z a-z 0-9 _ . : @ / -")
        try check((0...65535).contains(port), "port must be 0-65535")
        try check(heartbeatSeconds >= 1, "--heartbeat must be at least 1 second")
        try check(maxFrameBytes >= 256, "--max-frame must be at least 256 bytes")
        do {
            try tokens.validate()
        } catch {
            throw NodeConfigurationError(message: "token keys: \(error)")
        }
        try check(apiKey != "", "--api-key is empty: give a non-empty key, or leave it out")
        try check(
            maxConnections >= 1 && maxConnectionsPerUser >= 1 && maxRoomsPerConnection >= 1 && rateBurst >= 1
                && ratePerSecond >= 1 && handshakeTimeoutSeconds >= 1 && maxPendingHandshakes >= 1 && maxStrikes >= 1,
            "connection, room, rate and handshake limits must be at least 1")
        try check(maxBufferedBytes >= maxFrameBytes, "--max-buffered must be at least --max-frame")
        try check(presenceEventsLimit >= 0, "--presence-events-limit must be 0 (no limit) or more")
    }
}
