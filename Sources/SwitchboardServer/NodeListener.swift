import HummingbirdCore
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The node's listening socket and accept path, in place of Hummingbird's server, so that what
/// churn pays per connection is only what the connection needs. An accepted connection is set up
/// on its event loop (`NodeChannel.setup`, behind the request guards and TLS); a client socket
/// upgraded there is served by its handlers from then on and costs nothing here: no Swift task,
/// no hop through an async sequence, no entry in a table for shutdown (the node's drain closes
/// client sockets itself). Only connections that need a task (the HTTP API, cluster links,
/// refused upgrades) get one, as children of this service's task group.
///
/// On graceful shutdown it stops accepting, asks the connections it serves to finish
/// (`ChannelShouldQuiesceEvent`: an idle keep-alive connection closes, a request under way is
/// answered first) and returns once they have.
struct NodeListener: Service {
    let host: String
    let port: Int
    let backlog: Int
    let setup: @Sendable (any Channel) -> EventLoopFuture<NodeChannel.Value>
    let handle: @Sendable (NodeChannel.Value) async -> Void
    /// Called once bound, with the listening channel.
    let onListening: @Sendable (any Channel) async -> Void
    let logger: Logger

    func run() async throws {
        let (accepted, queue) = AsyncStream.makeStream(of: NodeChannel.Value.self)
        let serving = ServedChannels()
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.backlog, value: Int32(clamping: backlog))
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { [setup] channel in
                // A setup that fails has NIO close the channel.
                setup(channel).map { value in
                    value.upgraded.whenSettled { outcome in
                        if case .success(.client) = outcome { return }
                        serving.add(channel)
                        if case .terminated = queue.yield(value) {
                            // Shutting down: nothing will serve it.
                            serving.remove(channel)
                            channel.close(promise: nil)
                        }
                    }
                }
            }
        let server = try await bootstrap.bind(host: host, port: port).get()
        logger.info("listening", metadata: ["address": "\(host):\(server.localAddress?.port ?? port)"])
        await onListening(server)
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for await value in accepted {
                    group.addTask {
                        await handle(value)
                        serving.remove(value.channel)
                    }
                }
            }
        } onGracefulShutdown: {
            server.close(promise: nil)
            queue.finish()
            serving.quiesce()
        }
        // Cancelled rather than shut down: the task group cancelled its children; stop listening.
        queue.finish()
        try? await server.close()
    }
}

/// The connections a `NodeListener` serves with a task, to ask them to finish on shutdown.
private final class ServedChannels: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    func add(_ channel: any Channel) {
        channels.withLock { $0[ObjectIdentifier(channel)] = channel }
    }

    func remove(_ channel: any Channel) {
        _ = channels.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    func quiesce() {
        for channel in channels.withLock({ Array($0.values) }) {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
    }
}
