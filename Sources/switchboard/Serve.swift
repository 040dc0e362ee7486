import ArgumentParser
import EmbeddedBackplane
import HummingbirdTLS
import NIOSSL
import HubBackplane
import MeshBackplane
import RESP
import RedisBackplane
import SwitchboardCore
import Foundation
import Logging
import ServiceLifecycle
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
    @Option(help: "Seconds a connection may take to send a complete request, and an idle keep-alive may last (default 10).") var handshakeTimeout: Int?
    @Option(help: "Accepted sockets that have sent nothing yet, at most (default 1000).") var maxPendingHandshakes: Int?
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        _ = try Environment.secret(clusterSecret, "cluster-secret")  // empty: refused even when unused
        let chosen = [("redis", redis), ("peers", peers), ("hub", hub)].filter { Environment.string($0.1, $0.0) != nil }.map(\.0)
        guard chosen.count <= 1 else {
            throw ValidationError("choose one backplane: --\(chosen.joined(separator: ", --")) were given")
        }
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
        configuration.maxConnectionsPerUser = try Environment.int(maxConnectionsPerUser, "max-connections-per-user", default: configuration.maxConnectionsPerUser)
        configuration.maxRoomsPerConnection = try Environment.int(maxRooms, "max-rooms", default: configuration.maxRoomsPerConnection)
        configuration.rateBurst = try Environment.int(rateBurst, "rate-burst", default: configuration.rateBurst)
        configuration.ratePerSecond = try Environment.int(ratePerSecond, "rate-per-second", default: configuration.ratePerSecond)
        configuration.handshakeTimeoutSeconds = try Environment.int(handshakeTimeout, "handshake-timeout", default: configuration.handshakeTimeoutSeconds)
        configuration.maxPendingHandshakes = try Environment.int(maxPendingHandshakes, "max-pending-handshakes", default: configuration.maxPendingHandshakes)
        try checkLimits(configuration)
        warnIfOpen(configuration, logger: logger)
        let backplane: any Backplane
        if let url = Environment.string(hub, "hub") {
            guard let secret = try Environment.secret(clusterSecret, "cluster-secret") else {
                throw ValidationError("--hub needs --cluster-secret (the hub admits only nodes that present it)")
            }
            guard url.hasPrefix("ws://") || url.hasPrefix("wss://") else { throw ValidationError("--hub must be a ws:// URL") }
            backplane = HubBackplane(
                configuration: .init(hubURL: url, secret: secret, heartbeat: .seconds(configuration.heartbeatSeconds)), logger: logger)
        } else if let list = Environment.string(peers, "peers") {
            guard let secret = try Environment.secret(clusterSecret, "cluster-secret") else {
                throw ValidationError("--peers needs --cluster-secret (mesh links are admitted only with it)")
            }
            let seeds = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            guard !seeds.isEmpty else { throw ValidationError("--peers needs at least one HOST:PORT") }
            for seed in seeds where !seed.contains("://") && !seed.contains(":") {
                throw ValidationError("--peers: \(seed) is not HOST:PORT")
            }
            backplane = MeshBackplane(
                configuration: .init(seeds: seeds, secret: secret, heartbeat: .seconds(configuration.heartbeatSeconds)), logger: logger)
        } else if let url = Environment.string(redis, "redis") {
            let redisConfiguration: RedisClient.Configuration
            do { redisConfiguration = try RedisClient.Configuration(url: url) } catch { throw ValidationError("--redis: \(error)") }
            backplane = RedisBackplane(
                configuration: .init(redis: redisConfiguration, heartbeat: .seconds(configuration.heartbeatSeconds)), logger: logger)
        } else {
            backplane = EmbeddedCluster().backplane()
        }
        let node: SwitchboardNode
        do {
            node = try SwitchboardNode(configuration: configuration, backplane: backplane, logger: logger)
        } catch {
            throw ValidationError("TLS: \(error)")
        }
        try await runUntilSignalled(node.services, logger: logger)
    }
}

struct Hub: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a cluster hub: nodes started with --hub relay cross-node traffic through it.")

    @Option(help: "Address to listen on (default 127.0.0.1).") var host: String?
    @Option(help: "Port to listen on (default 9000).") var port: Int?
    @Option(help: "Shared secret nodes must present (required).") var clusterSecret: String?
    @Option(help: "Seconds between pings to nodes; a node silent for two is dropped (default 25).") var heartbeat: Int?
    @Option(help: "How /api/assign picks a node: fewest-connections (default) or round-robin.") var assign: String?
    @Option(help: "Seconds a connection may take to send a complete request (default 10).") var handshakeTimeout: Int?
    @Option(help: "Accepted sockets that have sent nothing yet, at most (default 1000).") var maxPendingHandshakes: Int?
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        guard let secret = try Environment.secret(clusterSecret, "cluster-secret") else {
            throw ValidationError("--cluster-secret is required: the hub admits only nodes that present it")
        }
        let logger = try logging.bootstrap()
        var configuration = HubConfiguration(secret: secret)
        configuration.host = Environment.string(host, "host") ?? configuration.host
        configuration.port = try Environment.int(port, "port", default: configuration.port)
        configuration.heartbeatSeconds = try Environment.int(heartbeat, "heartbeat", default: configuration.heartbeatSeconds)
        configuration.handshakeTimeoutSeconds = try Environment.int(handshakeTimeout, "handshake-timeout", default: configuration.handshakeTimeoutSeconds)
        configuration.maxPendingHandshakes = try Environment.int(maxPendingHandshakes, "max-pending-handshakes", default: configuration.maxPendingHandshakes)
        guard configuration.heartbeatSeconds >= 1, configuration.handshakeTimeoutSeconds >= 1, configuration.maxPendingHandshakes >= 1 else {
            throw ValidationError("--heartbeat, --handshake-timeout and --max-pending-handshakes must be at least 1")
        }
        if let name = Environment.string(assign, "assign") {
            guard let policy = HubConfiguration.AssignPolicy(rawValue: name) else {
                throw ValidationError("--assign must be fewest-connections or round-robin")
            }
            configuration.assign = policy
        }
        try await runUntilSignalled([HubServer(configuration: configuration, logger: logger).service], logger: logger)
    }
}

struct Cluster: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run N nodes in one process, joined by the embedded backplane (no outside service).")

    @Option(help: "How many nodes (default 3).") var nodes: Int?
    @Option(help: "Port of node n1; node i listens on base-port + i - 1 (default 8080).") var basePort: Int?
    @Option(help: "Address to listen on (default 127.0.0.1).") var host: String?
    @Option(help: "Seconds between server pings (default 25).") var heartbeat: Int?
    @Option(help: "Largest client message in bytes (default 65536).") var maxFrame: Int?
    @Option(help: "Protects /api/* with Authorization: Bearer KEY.") var apiKey: String?
    @Option(help: "HS256 secret for client tokens.") var jwtSecret: String?
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let count = try Environment.int(nodes, "nodes", default: 3)
        guard (1...64).contains(count) else { throw ValidationError("--nodes must be between 1 and 64") }
        let firstPort = try Environment.int(basePort, "base-port", default: 8080)
        let logger = try logging.bootstrap()
        let cluster = EmbeddedCluster()
        var services: [any Service] = []
        for index in 1...count {
            var configuration = NodeConfiguration(nodeID: "n\(index)")
            configuration.host = Environment.string(host, "host") ?? configuration.host
            configuration.port = firstPort + index - 1
            configuration.apiKey = try Environment.secret(apiKey, "api-key")
            configuration.jwtSecret = try Environment.secret(jwtSecret, "jwt-secret")
            configuration.heartbeatSeconds = try Environment.int(heartbeat, "heartbeat", default: configuration.heartbeatSeconds)
            configuration.maxFrameBytes = try Environment.int(maxFrame, "max-frame", default: configuration.maxFrameBytes)
            try checkLimits(configuration)
            if index == 1 { warnIfOpen(configuration, logger: logger) }
            services += try SwitchboardNode(configuration: configuration, backplane: cluster.backplane(), logger: logger).services
        }
        try await runUntilSignalled(services, logger: logger)
    }
}

func checkLimits(_ configuration: NodeConfiguration) throws {
    guard Name.isValid(configuration.nodeID) else { throw ValidationError("--node-id must be 1 to 128 characters of A-Z a-z 0-9 _ . : @ / -") }
    guard (0...65535).contains(configuration.port) else { throw ValidationError("port must be 0-65535") }
    guard configuration.heartbeatSeconds >= 1 else { throw ValidationError("--heartbeat must be at least 1 second") }
    guard configuration.maxFrameBytes >= 256 else { throw ValidationError("--max-frame must be at least 256 bytes") }
    do {
        try configuration.tokens.validate()
    } catch {
        throw ValidationError("token keys: \(error)")
    }
    guard configuration.maxConnections >= 1, configuration.maxConnectionsPerUser >= 1, configuration.maxRoomsPerConnection >= 1,
        configuration.rateBurst >= 1, configuration.ratePerSecond >= 1, configuration.handshakeTimeoutSeconds >= 1,
        configuration.maxPendingHandshakes >= 1
    else {
        throw ValidationError("connection, room, rate and handshake limits must be at least 1")
    }
    guard configuration.maxBufferedBytes >= configuration.maxFrameBytes else {
        throw ValidationError("--max-buffered must be at least --max-frame")
    }
}

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
