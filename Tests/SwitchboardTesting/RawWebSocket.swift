import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A bare WebSocket client on raw TCP, for behaviour our real client would never show: it
/// answers no pings, and it can stop reading altogether.
package final class RawWebSocket: Sendable {
    package let channel: any Channel
    private let collector: Collector

    private init(channel: any Channel, collector: Collector) {
        self.channel = channel
        self.collector = collector
    }

    /// Opens a TCP connection and sends nothing.
    package static func open(port: Int) async throws -> RawWebSocket {
        let collector = Collector()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return RawWebSocket(channel: channel, collector: collector)
    }

    /// Connects and sends the upgrade request (`received` will hold the response).
    package static func connect(
        port: Int, path: String, subprotocols: String? = nil, origin: String? = nil, authorization: String? = nil,
        receiveBuffer: Int32? = nil
    ) async throws -> RawWebSocket {
        let collector = Collector()
        // Half-closure allowed: the server's FIN does not close our side; only we decide.
        var bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) }
            }
        if let receiveBuffer {
            bootstrap = bootstrap.channelOption(ChannelOptions.socketOption(.so_rcvbuf), value: SocketOptionValue(receiveBuffer))
        }
        let channel = try await bootstrap.connect(host: "127.0.0.1", port: port).get()
        let socket = RawWebSocket(channel: channel, collector: collector)
        var request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        request += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        if let subprotocols { request += "Sec-WebSocket-Protocol: \(subprotocols)\r\n" }
        if let origin { request += "Origin: \(origin)\r\n" }
        if let authorization { request += "Authorization: \(authorization)\r\n" }
        try await socket.write(Array((request + "\r\n").utf8))
        return socket
    }

    /// Connects to `/ws` and waits for the server's `welcome`.
    package static func welcomed(port: Int, path: String, receiveBuffer: Int32? = nil) async throws -> RawWebSocket {
        let socket = try await connect(port: port, path: path, receiveBuffer: receiveBuffer)
        try await eventually("welcome on \(path)") { socket.textFrames.contains { $0.contains("welcome") } }
        return socket
    }

    package func write(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
    }

    /// A masked client text frame.
    package func sendText(_ text: String) async throws {
        try await sendFrame(opcode: 0x1, Array(text.utf8))
    }

    /// A masked client frame with this opcode (payloads under 126 bytes); `fin: false` for a
    /// fragment, `rsv1` to set a reserved bit.
    package func sendFrame(opcode: UInt8, _ payload: [UInt8], fin: Bool = true, rsv1: Bool = false, masked: Bool = true) async throws {
        try await write(Self.frame(opcode: opcode, payload, fin: fin, rsv1: rsv1, masked: masked))
    }

    /// The bytes of a client frame (payloads under 64 KiB), masked unless told otherwise.
    package static func frame(opcode: UInt8, _ payload: [UInt8], fin: Bool = true, rsv1: Bool = false, masked: Bool = true) -> [UInt8] {
        precondition(payload.count < 65536)
        let mask: [UInt8] = [1, 2, 3, 4]
        let first = (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode
        let length: [UInt8] =
            payload.count < 126 ? [UInt8(payload.count)] : [126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        guard masked else { return [first] + length + payload }
        var frame: [UInt8] = [first, 0x80 | length[0]] + length.dropFirst() + mask
        for (i, byte) in payload.enumerated() { frame.append(byte ^ mask[i % 4]) }
        return frame
    }

    /// How many complete server frames with this opcode arrived.
    package func count(opcode: UInt8) -> Int {
        frames.filter { $0.opcode == opcode }.count
    }

    /// Everything received so far (HTTP response and raw frames).
    package var receivedBytes: [UInt8] { collector.bytes.withLockedValue { $0 } }
    /// The same, as text (frame headers show as replacement characters).
    package var received: String { String(decoding: receivedBytes, as: UTF8.self) }

    /// Waits until the server has answered the upgrade: a JSON body or first frame has arrived
    /// (both end in `}`), or the server closed the socket.
    package func waitForAnswer(_ what: String = "an answer") async throws {
        try await eventually(what) { self.received.contains("}") || self.isClosed }
    }

    /// True once a server close frame with `code` has arrived.
    package func receivedClose(code: UInt16) -> Bool {
        let bytes = receivedBytes
        guard bytes.count >= 4 else { return false }
        return (0...(bytes.count - 4)).contains {
            bytes[$0] == 0x88 && bytes[$0 + 1] >= 2 && bytes[$0 + 2] == UInt8(code >> 8) && bytes[$0 + 3] == UInt8(code & 0xFF)
        }
    }
    /// True once a server frame with this opcode and payload (under 126 bytes) has arrived.
    package func receivedFrame(opcode: UInt8, _ payload: [UInt8]) -> Bool {
        receivedBytes.firstRange(of: [0x80 | opcode, UInt8(payload.count)] + payload) != nil
    }

    /// The payloads of the complete server text frames received so far (after the HTTP head).
    package var textFrames: [String] {
        frames.filter { $0.opcode == 0x1 }.map(\.text)
    }

    /// Every complete server frame received so far, in order (after the HTTP head).
    package var frames: [(opcode: UInt8, text: String)] {
        rawFrames.map { ($0.opcode, String(decoding: $0.payload, as: UTF8.self)) }
    }

    /// The same, with their payloads as bytes.
    package var rawFrames: [(opcode: UInt8, payload: [UInt8])] {
        let bytes = receivedBytes
        guard let head = bytes.firstRange(of: Array("\r\n\r\n".utf8)) else { return [] }
        var frames: [(opcode: UInt8, payload: [UInt8])] = []
        var index = head.upperBound
        while index + 2 <= bytes.count {
            let opcode = bytes[index] & 0x0F
            var length = Int(bytes[index + 1] & 0x7F)
            var start = index + 2
            if length == 126 {
                guard start + 2 <= bytes.count else { break }
                length = Int(bytes[start]) << 8 | Int(bytes[start + 1])
                start += 2
            } else if length == 127 {
                guard start + 8 <= bytes.count else { break }
                length = bytes[start..<start + 8].reduce(0) { $0 << 8 | Int($1) }
                start += 8
            }
            guard start + length <= bytes.count else { break }
            frames.append((opcode, Array(bytes[start..<start + length])))
            index = start + length
        }
        return frames
    }

    package var isClosed: Bool { collector.closed.withLockedValue { $0 } }

    /// Stops reading from the socket: the kernel buffers fill and the server's writes back up.
    package func stopReading() async throws {
        try await channel.setOption(ChannelOptions.autoRead, value: false).get()
    }

    package func close() {
        channel.close(promise: nil)
    }

    private final class Collector: ChannelInboundHandler, Sendable {
        package typealias InboundIn = ByteBuffer
        package let bytes = NIOLockedValueBox<[UInt8]>([])
        package let closed = NIOLockedValueBox(false)

        package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            bytes.withLockedValue { $0 += buffer.readableBytesView }
        }

        package func channelInactive(context: ChannelHandlerContext) {
            closed.withLockedValue { $0 = true }
        }

        package func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            // The server finished sending (FIN). The test decides when to close.
            if case ChannelEvent.inputClosed = event {
                closed.withLockedValue { $0 = true }
            }
        }
    }
}
