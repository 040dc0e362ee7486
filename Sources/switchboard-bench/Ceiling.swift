import ArgumentParser
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// The machine's ceiling: a server that does no protocol or cluster work beyond what the load
/// generator needs. `join` adds the socket to the one room; `publish` wraps the data in a
/// message frame once and writes that buffer to every socket, flushing each socket once per
/// event-loop turn however many messages went to it.
struct Ceiling: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "A do-nothing fan-out server: the ceiling for the load generator.")
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on.") var port = 8090
    @Option(help: "Event loop threads.") var threads = System.coreCount

    func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let room = CeilingRoom(loops: Array(group.makeIterator()))
        let upgrader = NIOWebSocketServerUpgrader(
            maxFrameSize: 1 << 16, shouldUpgrade: { channel, _ in channel.eventLoop.makeSucceededFuture(HTTPHeaders()) },
            upgradePipelineHandler: { channel, _ in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(CeilingHandler(room: room)) }
            })
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 4096)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline(withServerUpgrade: (upgraders: [upgrader], completionHandler: { _ in }))
            }
            .bind(host: host, port: port).get()
        print("listening on http://\(host):\(port) (ceiling)")
        fflush(nil)
        try await server.closeFuture.get()
    }
}

/// Members of the one room, kept per event loop and touched only on that loop.
final class CeilingRoom: @unchecked Sendable {
    let loops: [any EventLoop]
    private var members: [[any Channel]]
    private var flushScheduled: [Bool]

    init(loops: [any EventLoop]) {
        self.loops = loops
        members = loops.map { _ in [] }
        flushScheduled = loops.map { _ in false }
    }

    private func index(of loop: any EventLoop) -> Int { loops.firstIndex { $0 === loop }! }

    func add(_ channel: any Channel) {
        let index = index(of: channel.eventLoop)
        members[index].append(channel)
    }

    func remove(_ channel: any Channel) {
        let index = index(of: channel.eventLoop)
        members[index].removeAll { $0 === channel }
    }

    func fanOut(_ frame: ByteBuffer) {
        for (index, loop) in loops.enumerated() {
            loop.execute {
                let message = WebSocketFrame(fin: true, opcode: .text, data: frame)
                for channel in self.members[index] { channel.write(message, promise: nil) }
                guard !self.flushScheduled[index] else { return }
                // One flush per socket for everything written this turn.
                self.flushScheduled[index] = true
                loop.execute {
                    self.flushScheduled[index] = false
                    for channel in self.members[index] { channel.flush() }
                }
            }
        }
    }
}

final class CeilingHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame
    let room: CeilingRoom
    private var joined = false

    init(room: CeilingRoom) {
        self.room = room
    }

    /// Added once upgraded: greet, as every server in the run does before commands.
    func handlerAdded(context: ChannelHandlerContext) {
        reply(context, "{\"type\":\"welcome\"}")
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            let text = String(buffer: frame.unmaskedData)
            if text.contains("\"type\":\"join\""), !joined {
                joined = true
                room.add(context.channel)
                reply(context, "{\"type\":\"ok\"}")
            } else if text.contains("\"type\":\"publish\""), let start = text.range(of: "\"data\":")?.upperBound {
                reply(context, "{\"type\":\"ok\"}")
                let data = text[start..<text.index(before: text.endIndex)]
                room.fanOut(context.channel.allocator.buffer(string: "{\"type\":\"message\",\"room\":\"bench\",\"data\":\(data)}"))
            }
        case .ping:
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
        case .connectionClose:
            context.close(promise: nil)
        default:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if joined { room.remove(context.channel) }
    }

    private func reply(_ context: ChannelHandlerContext, _ text: String) {
        context.writeAndFlush(
            wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, data: context.channel.allocator.buffer(string: text))), promise: nil)
    }
}
