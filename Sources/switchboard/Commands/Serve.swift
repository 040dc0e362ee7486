import ArgumentParser
import EmbeddedBackplane
import Foundation
import HubBackplane
import HummingbirdTLS
import Logging
import MeshBackplane
import NIOSSL
import RESP
import RedisBackplane
import ServiceLifecycle
import SwitchboardCore
import SwitchboardServer

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run one node.")

    @Option(help: "Address to listen on (default 127.0.0.1).") var host: String?
    @Option(help: "Port to listen on (default 8080).") var port: Int?
    @Option(help: "This node's id (default: random).") var nodeId: String?
    @Option(help: "WebSocket URL clients use for this node (default ws://HOST:PORT/ws).") var advertiseUrl: String?
    @Option(help: "Redis backplane: redis://HOST:PORT.") var redis: String?
    @Option(help: "Mesh backplane: HOST:PORT,HOST:PORT of existing members.") var peers: String?
    @Option(help: "Hub backplane: ws://HOST:PORT of the hub.") var hub: String?
    @Option(help: "Shared secret of mesh and hub links.") var clusterSecret: String?
    @Option(help: "HS256 secret for client tokens (at least 32 bytes).") var jwtSecret: String?
    @Option(help: "PEM file with the public key of client tokens (ES256 or RS256).") var jwtPublicKey: String?
    @Option(help: "Seconds of clock skew forgiven on a token's exp and nbf (default 30).") var tokenLeeway: Int?
    @Option(help: "Protects /api/* with Authorization: Bearer KEY.") var apiKey: String?
    @Option(help: "Browser origins allowed to connect, comma-separated (default: any).") var allowedOrigins: String?
    @Option(help: "PEM certificate chain for native TLS (wss://); needs --tls-key.") var tlsCert: String?
    @Option(help: "PEM private key for native TLS.") var tlsKey: String?
    @Option(help: "Seconds between server pings (default 25).") var heartbeat: Int?
    @Option(help: "Largest client message in bytes (default 65536).") var maxFrame: Int?
    @Option(help: "Bytes queued for one slow connection before it is closed (default 4194304).") var maxBuffered: Int?
    @Option(help: "WebSockets this node accepts (default 19000).") var maxConnections: Int?
    @Option(help: "WebSockets one user may hold on this node (default 100).") var maxConnectionsPerUser: Int?
    @Option(help: "Rooms one connection may be in (default 1000).") var maxRooms: Int?
    @Option(help: "Frames a connection may send at once (default 2000).") var rateBurst: Int?
    @Option(help: "Frames per second a connection may keep sending (default 2000).") var ratePerSecond: Int?
    @Option(help: "Seconds a connection may take to send a complete request, and an idle keep-alive may last (default 10).")
    var handshakeTimeout: Int?
    @Option(help: "Accepted sockets that have sent nothing yet, at most (default 1000).") var maxPendingHandshakes: Int?
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        // An empty secret is refused even when no backplane would use it.
        let choice = try BackplaneChoice(
            redis: Environment.string(redis, "redis"), peers: Environment.string(peers, "peers"),
            hub: Environment.string(hub, "hub"), clusterSecret: try Environment.secret(clusterSecret, "cluster-secret"))
        var logger = try logging.bootstrap()
        var configuration = NodeConfiguration(nodeID: Environment.string(nodeId, "node-id") ?? "node-" + randomSuffix())
        logger[metadataKey: "node"] = "\(configuration.nodeID)"
        configuration.host = Environment.string(host, "host") ?? configuration.host
        configuration.port = try Environment.int(port, "port", default: configuration.port)
        configuration.advertiseURL = Environment.string(advertiseUrl, "advertise-url")
        configuration.apiKey = try Environment.secret(apiKey, "api-key")
        configuration.jwtSecret = try Environment.secret(jwtSecret, "jwt-secret")
        if let path = Environment.string(jwtPublicKey, "jwt-public-key") {
            do {
                configuration.tokens.publicKeyPEM = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                throw ValidationError("--jwt-public-key: cannot read \(path): \(error.localizedDescription)")
            }
        }
        configuration.tokens.leeway = .seconds(try Environment.int(tokenLeeway, "token-leeway", default: 30))
        configuration.tls = try loadTLS(certificate: Environment.string(tlsCert, "tls-cert"), key: Environment.string(tlsKey, "tls-key"))
        configuration.allowedOrigins = Environment.string(allowedOrigins, "allowed-origins").map {
            Set($0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
        }
        configuration.heartbeatSeconds = try Environment.int(heartbeat, "heartbeat", default: configuration.heartbeatSeconds)
        configuration.maxFrameBytes = try Environment.int(maxFrame, "max-frame", default: configuration.maxFrameBytes)
        configuration.maxBufferedBytes = try Environment.int(maxBuffered, "max-buffered", default: configuration.maxBufferedBytes)
        configuration.maxConnections = try Environment.int(maxConnections, "max-connections", default: configuration.maxConnections)
        configuration.maxConnectionsPerUser = try Environment.int(
            maxConnectionsPerUser, "max-connections-per-user", default: configuration.maxConnectionsPerUser)
        configuration.maxRoomsPerConnection = try Environment.int(maxRooms, "max-rooms", default: configuration.maxRoomsPerConnection)
        configuration.rateBurst = try Environment.int(rateBurst, "rate-burst", default: configuration.rateBurst)
        configuration.ratePerSecond = try Environment.int(ratePerSecond, "rate-per-second", default: configuration.ratePerSecond)
        configuration.handshakeTimeoutSeconds = try Environment.int(
            handshakeTimeout, "handshake-timeout", default: configuration.handshakeTimeoutSeconds)
        configuration.maxPendingHandshakes = try Environment.int(
            maxPendingHandshakes, "max-pending-handshakes", default: configuration.maxPendingHandshakes)
        try checkLimits(configuration)
        warnIfOpen(configuration, logger: logger)
        let backplane = try choice.make(heartbeat: .seconds(configuration.heartbeatSeconds), logger: logger)
        let node: SwitchboardNode
        do {
            let id = configuration.nodeID
            node = try SwitchboardNode(configuration: configuration, backplane: backplane, logger: logger) {
                announce("listening on \($0) (node \(id))")
            }
        } catch {
            throw ValidationError("TLS: \(error)")
        }
        try await runUntilSignalled(node.services, logger: logger)
    }
}

/// The one backplane a node runs with, chosen from the options: none of them is the embedded
/// backplane (a standalone node), and two at once are refused.
enum BackplaneChoice {
    case standalone
    case redis(url: String)
    case hub(url: String, secret: String)
    case mesh(seeds: [String], secret: String)

    init(redis: String?, peers: String?, hub: String?, clusterSecret: String?) throws {
        let chosen = [("redis", redis), ("peers", peers), ("hub", hub)].filter { $0.1 != nil }.map(\.0)
        guard chosen.count <= 1 else {
            throw ValidationError("choose one backplane: --\(chosen.joined(separator: ", --")) were given")
        }
        if let url = hub {
            guard let secret = clusterSecret else {
                throw ValidationError("--hub needs --cluster-secret (the hub admits only nodes that present it)")
            }
            guard url.hasPrefix("ws://") || url.hasPrefix("wss://") else { throw ValidationError("--hub must be a ws:// URL") }
            self = .hub(url: url, secret: secret)
        } else if let list = peers {
            guard let secret = clusterSecret else {
                throw ValidationError("--peers needs --cluster-secret (mesh links are admitted only with it)")
            }
            let seeds = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            guard !seeds.isEmpty else { throw ValidationError("--peers needs at least one HOST:PORT") }
            for seed in seeds where !seed.contains("://") && !seed.contains(":") {
                throw ValidationError("--peers: \(seed) is not HOST:PORT")
            }
            self = .mesh(seeds: seeds, secret: secret)
        } else if let url = redis {
            self = .redis(url: url)
        } else {
            self = .standalone
        }
    }

    func make(heartbeat: Duration, logger: Logger) throws -> any Backplane {
        switch self {
        case .standalone:
            return EmbeddedCluster().backplane()
        case .redis(let url):
            let redis: RedisClient.Configuration
            do { redis = try RedisClient.Configuration(url: url) } catch { throw ValidationError("--redis: \(error)") }
            return RedisBackplane(configuration: .init(redis: redis, heartbeat: heartbeat), logger: logger)
        case .hub(let url, let secret):
            return HubBackplane(configuration: .init(hubURL: url, secret: secret, heartbeat: heartbeat), logger: logger)
        case .mesh(let seeds, let secret):
            return MeshBackplane(configuration: .init(seeds: seeds, secret: secret, heartbeat: heartbeat), logger: logger)
        }
    }
}
