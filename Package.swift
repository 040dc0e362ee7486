// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "switchboard",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "switchboard", targets: ["switchboard"]),
        .executable(name: "switchboard-bench", targets: ["switchboard-bench"]),
        .library(name: "SwitchboardClient", targets: ["SwitchboardClient"]),
        .library(name: "SwitchboardServer", targets: ["SwitchboardServer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
    ],
    targets: [
        // No networking: envelope, addresses, names, router, presence, the Backplane seam.
        .target(name: "SwitchboardCore", path: "Sources/SwitchboardCore"),
        // The client protocol's JSON codec, shared by server and client.
        .target(name: "SwitchboardProtocol", dependencies: ["SwitchboardCore"], path: "Sources/SwitchboardProtocol"),
        // A small AMQP 0-9-1 client of our own for the RabbitMQ backplane: codec (frames, methods,
        // field tables) and one confirmed channel on SwiftNIO.
        .target(
            name: "AMQP",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/AMQP"
        ),
        // A small NATS client of our own for the NATS backplane: the protocol's codec, one
        // connection, and a client that fails over between the servers of a cluster.
        .target(
            name: "NATS",
            dependencies: [
                "SwitchboardCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/NATS"
        ),
        // The STOMP 1.2 codec: frames, escaping, an incremental parser. No networking.
        .target(name: "STOMP", path: "Sources/STOMP"),
        // The one binary record format of what nodes tell each other (Redis, mesh and hub links).
        .target(
            name: "ClusterCodec",
            dependencies: ["SwitchboardCore", .product(name: "NIOCore", package: "swift-nio")],
            path: "Sources/ClusterCodec"
        ),
        // A small Redis client of our own: RESP2/RESP3 codec, pipelining, pub/sub, reconnection.
        .target(
            name: "RESP",
            dependencies: [
                "SwitchboardCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/RESP"
        ),
        // The seam for backplanes whose peers link to each node at `/cluster` (the mesh).
        .target(
            name: "ClusterLink",
            dependencies: [
                "SwitchboardCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/ClusterLink"
        ),
        // Backplanes: one folder each, all behind SwitchboardCore.Backplane.
        .target(name: "EmbeddedBackplane", dependencies: ["SwitchboardCore"], path: "Sources/Backplanes/Embedded"),
        .target(
            name: "HubBackplane",
            dependencies: [
                "SwitchboardCore", "ClusterCodec", "ClusterLink",
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/Backplanes/Hub"
        ),
        .target(
            name: "MeshBackplane",
            dependencies: [
                "SwitchboardCore", "ClusterLink", "ClusterCodec",
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/Backplanes/Mesh"
        ),
        // Membership and presence over any broker (announces, deltas, beats): RabbitMQ's and NATS's.
        .target(
            name: "BrokerMembership",
            dependencies: [
                "SwitchboardCore", "ClusterCodec",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/Backplanes/Broker"
        ),
        .target(
            name: "RabbitMQBackplane",
            dependencies: [
                "SwitchboardCore", "BrokerMembership", "AMQP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/Backplanes/RabbitMQ"
        ),
        .target(
            name: "NATSBackplane",
            dependencies: [
                "SwitchboardCore", "BrokerMembership", "NATS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/Backplanes/NATS"
        ),
        .target(
            name: "RedisBackplane",
            dependencies: [
                "SwitchboardCore", "ClusterCodec", "RESP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/Backplanes/Redis"
        ),
        // What every connection of a node or a hub passes first (request deadline, 400/431, the
        // request-target parser), and the JSON answers both give.
        .target(
            name: "SwitchboardHTTP",
            dependencies: [
                "SwitchboardCore", "SwitchboardProtocol",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/SwitchboardHTTP"
        ),
        // `switchboard hub`: the relay of the hub backplane, a process of its own.
        .target(
            name: "SwitchboardHub",
            dependencies: [
                "SwitchboardCore", "SwitchboardProtocol", "SwitchboardHTTP", "EmbeddedBackplane", "HubBackplane",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Sources/SwitchboardHub"
        ),
        // What browsers get from a node: the demo and admin pages and switchboard.js, as files.
        .target(name: "SwitchboardWeb", path: "Sources/SwitchboardWeb", resources: [.copy("Assets")]),
        .target(
            name: "SwitchboardServer",
            dependencies: [
                "SwitchboardCore", "SwitchboardProtocol", "SwitchboardHTTP", "ClusterLink", "SwitchboardWeb", "STOMP",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Sources/SwitchboardServer"
        ),
        .target(
            name: "SwitchboardClient",
            dependencies: [
                "SwitchboardCore", "SwitchboardProtocol",
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/SwitchboardClient"
        ),
        .executableTarget(
            name: "switchboard",
            dependencies: [
                "SwitchboardServer", "SwitchboardHub", "EmbeddedBackplane", "RedisBackplane", "HubBackplane", "MeshBackplane", "RESP",
                "RabbitMQBackplane", "AMQP", "NATSBackplane", "NATS",
                "SwitchboardProtocol",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/switchboard"
        ),
        // The load generator and the ceiling server (bench/), straight on SwiftNIO.
        .executableTarget(
            name: "switchboard-bench",
            dependencies: [
                "RedisBackplane", "RESP", "SwitchboardCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "Sources/switchboard-bench"
        ),
        // The cluster's binary records, without sockets: runs in seconds.
        .testTarget(
            name: "ClusterCodecTests",
            dependencies: [
                "ClusterCodec", "SwitchboardCore", "HubBackplane", "MeshBackplane", "RedisBackplane", "BrokerMembership",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Tests/ClusterCodecTests",
            exclude: ["Corpus"]
        ),
        // The AMQP codec on its own: fuzzed, with its kept corpus of malformed input.
        .testTarget(name: "AMQPTests", dependencies: ["AMQP"], path: "Tests/AMQPTests", exclude: ["Corpus"]),
        // The NATS codec on its own: fuzzed, with its kept corpus of malformed input.
        .testTarget(
            name: "NATSTests", dependencies: ["NATS", .product(name: "NIOCore", package: "swift-nio")], path: "Tests/NATSTests",
            exclude: ["Corpus"]),
        // The STOMP codec on its own: fuzzed, with its kept corpus of malformed frames.
        .testTarget(name: "STOMPTests", dependencies: ["STOMP"], path: "Tests/STOMPTests", exclude: ["Corpus"]),
        // The node's state machines, on their own and on NIO's EmbeddedChannel: no sockets.
        .testTarget(
            name: "SwitchboardServerTests",
            dependencies: [
                "SwitchboardServer", "SwitchboardCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/SwitchboardServerTests"
        ),
        // What the integration tests share, as HummingbirdTesting does for Hummingbird's: nodes in
        // this process or as processes, a private redis-server, raw sockets, test clients.
        .target(
            name: "SwitchboardTesting",
            dependencies: [
                "SwitchboardCore", "SwitchboardProtocol", "EmbeddedBackplane", "SwitchboardServer", "SwitchboardClient", "RESP",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/SwitchboardTesting"
        ),
        .testTarget(
            name: "SwitchboardTests",
            dependencies: [
                "SwitchboardTesting", "SwitchboardCore", "SwitchboardProtocol", "EmbeddedBackplane", "SwitchboardServer", "SwitchboardHTTP",
                "SwitchboardClient", "STOMP", "AMQP",
                "RESP", "RedisBackplane", "HubBackplane", "MeshBackplane", "ClusterLink", "BrokerMembership", "RabbitMQBackplane",
                "NATS", "NATSBackplane",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            path: "Tests/SwitchboardTests",
            // The fuzz tests' kept corpus, read from the source tree.
            exclude: ["Corpus"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
