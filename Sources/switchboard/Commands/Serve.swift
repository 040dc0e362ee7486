import AMQP
import ArgumentParser
import EmbeddedBackplane
import Foundation
import HubBackplane
import HummingbirdTLS
import Logging
import MeshBackplane
import NATS
import NATSBackplane
import NIOSSL
import RESP
import RabbitMQBackplane
import RedisBackplane
import ServiceLifecycle
import SwitchboardCore
import SwitchboardServer

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run one node.")

    @Option(help: "Port to listen on.") var port = 8080
    @Option(help: "This node's id (default: random).") var nodeId: String?
    @Option(help: "WebSocket URL clients use for this node (default ws://HOST:PORT/ws).") var advertiseUrl: String?
    @Option(help: "Redis backplane: redis://HOST:PORT, or members of a Redis Cluster, comma-separated.") var redis: String?
    @Option(help: "RabbitMQ backplane: amqp://USER:PASS@HOST:PORT[/VHOST].") var rabbitmq: String?
    @Option(help: "NATS backplane: nats://HOST:PORT[,nats://HOST:PORT...] (servers of one NATS cluster).") var nats: String?
    @Option(help: "Mesh backplane: HOST:PORT,HOST:PORT of existing members.") var peers: String?
    @Option(help: "Hub backplane: ws://HOST:PORT of the hub.") var hub: String?
    @Option(help: "Shared secret of mesh and hub links.") var clusterSecret: String?
    @OptionGroup var node: NodeOptions
    @OptionGroup var logging: LoggingOptions
    @OptionGroup var configFile: ConfigFileOptions

    func run() async throws {
        var choice = try BackplaneChoice(redis: redis, rabbitmq: rabbitmq, nats: nats, peers: peers, hub: hub, clusterSecret: clusterSecret)
        var logger = try logging.bootstrap()
        try await choice.detectRedisCluster(logger: logger)
        var configuration = try node.configuration(nodeID: nodeId ?? "node-" + randomSuffix(), port: port)
        configuration.advertiseURL = advertiseUrl
        logger[metadataKey: "node"] = "\(configuration.nodeID)"
        warnIfOpen(configuration, logger: logger)
        let backplane = try choice.make(
            heartbeat: .seconds(configuration.heartbeatSeconds), history: try self.node.history.policy(), logger: logger)
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
    case redisCluster(seeds: [ClusterSlotMap.Node])
    case rabbitmq(AMQPAddress)
    case nats([NATSClient.Server])
    case hub(url: String, secret: String)
    case mesh(seeds: [String], secret: String)

    init(redis: String?, rabbitmq: String? = nil, nats: String? = nil, peers: String?, hub: String?, clusterSecret: String?) throws {
        let chosen = [("redis", redis), ("rabbitmq", rabbitmq), ("nats", nats), ("peers", peers), ("hub", hub)].filter { $0.1 != nil }.map(
            \.0)
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
        } else if let list = redis {
            let urls = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            var seeds: [ClusterSlotMap.Node] = []
            for url in urls {
                let parsed: RedisClient.Configuration
                do { parsed = try RedisClient.Configuration(url: url) } catch { throw ValidationError("--redis: \(error)") }
                seeds.append(ClusterSlotMap.Node(host: parsed.host, port: parsed.port))
            }
            guard let first = urls.first else { throw ValidationError("--redis needs redis://HOST:PORT") }
            self = seeds.count > 1 ? .redisCluster(seeds: seeds) : .redis(url: first)
        } else if let url = rabbitmq {
            guard let address = AMQPAddress(url: url) else {
                throw ValidationError(
                    "--rabbitmq must be amqp://USER:PASS@HOST:PORT[/VHOST] (a port from 1 to 65535, percent-escapes well-formed)")
            }
            self = .rabbitmq(address)
        } else if let list = nats {
            let urls = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            let servers = urls.compactMap { NATSClient.Server(url: $0) }
            guard !urls.isEmpty, servers.count == urls.count else {
                throw ValidationError("--nats must be nats://HOST:PORT[,nats://HOST:PORT...]")
            }
            self = .nats(servers)
        } else {
            self = .standalone
        }
    }

    /// One `--redis` address may be a member of a Redis Cluster: asked, it says so. One that does
    /// not answer yet is taken as one Redis (several addresses always mean a cluster).
    mutating func detectRedisCluster(logger: Logger) async throws {
        guard case .redis(let url) = self else { return }
        let parsed = try RedisClient.Configuration(url: url)
        switch await RedisClusterClient.isClusterMember(host: parsed.host, port: parsed.port) {
        case true?:
            logger.info("\(parsed.host):\(parsed.port) is a member of a Redis Cluster: using the cluster")
            self = .redisCluster(seeds: [ClusterSlotMap.Node(host: parsed.host, port: parsed.port)])
        case false?:
            break
        case nil:
            logger.notice(
                "Redis at \(parsed.host):\(parsed.port) does not answer yet: using it as one Redis (give two or more members for a Redis Cluster)"
            )
        }
    }

    func make(heartbeat: Duration, history: HistoryPolicy, logger: Logger) throws -> any Backplane {
        switch self {
        case .standalone:
            return EmbeddedCluster(history: history).backplane()
        case .redis(let url):
            let redis: RedisClient.Configuration
            do { redis = try RedisClient.Configuration(url: url) } catch { throw ValidationError("--redis: \(error)") }
            return RedisBackplane(configuration: .init(redis: redis, heartbeat: heartbeat, history: history), logger: logger)
        case .redisCluster(let seeds):
            var configuration = RedisBackplane.Configuration(
                redis: RedisClient.Configuration(host: seeds[0].host, port: seeds[0].port), heartbeat: heartbeat, history: history)
            configuration.clusterSeeds = seeds
            return RedisBackplane(configuration: configuration, logger: logger)
        case .rabbitmq(let address):
            if history.isOn {
                logger.notice(
                    "the RabbitMQ backplane keeps no history: resumes get recovered:false and history is unsupported (docs/PROTOCOL.md)")
            }
            return RabbitMQBackplane(configuration: .init(broker: address, heartbeat: heartbeat), logger: logger)
        case .nats(let servers):
            if history.isOn {
                logger.notice(
                    "the NATS backplane keeps no history: resumes get recovered:false and history is unsupported (docs/PROTOCOL.md)")
            }
            return NATSBackplane(configuration: .init(servers: servers, heartbeat: heartbeat), logger: logger)
        case .hub(let url, let secret):
            return HubBackplane(configuration: .init(hubURL: url, secret: secret, heartbeat: heartbeat, history: history), logger: logger)
        case .mesh(let seeds, let secret):
            if history.isOn {
                logger.notice("the mesh keeps no history: resumes get recovered:false and history is unsupported (docs/PROTOCOL.md)")
            }
            return MeshBackplane(configuration: .init(seeds: seeds, secret: secret, heartbeat: heartbeat), logger: logger)
        }
    }
}
