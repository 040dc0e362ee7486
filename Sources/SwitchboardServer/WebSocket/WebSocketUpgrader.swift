import Crypto
import NIOCore
import NIOHTTP1
import NIOWebSocket

/// The WebSocket handshake (RFC 6455 4.2), and nothing more: unlike NIO's upgrader it adds no
/// handlers, so that each kind of socket gets only what it needs (a client socket one handler
/// that reads frames itself, `ClientSocketHandler`; a cluster link NIO's frame codec).
struct WebSocketUpgrader<UpgradeResult: Sendable>: NIOTypedHTTPServerProtocolUpgrader {
    let supportedProtocol = "websocket"
    /// RFC 6455 does not make clients list these in `Connection`; they are checked below.
    let requiredUpgradeHeaders: [String] = []

    /// Extra response headers for an admitted upgrade, or nil to refuse it.
    let shouldUpgrade: @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<HTTPHeaders?>
    /// Sets the pipeline up once the 101 is flushed; what the peer sent meanwhile waits for it.
    let upgradePipelineHandler: @Sendable (any Channel, HTTPRequestHead) -> EventLoopFuture<UpgradeResult>

    func buildUpgradeResponse(channel: any Channel, upgradeRequest: HTTPRequestHead, initialResponseHeaders: HTTPHeaders)
        -> EventLoopFuture<HTTPHeaders>
    {
        let keys = upgradeRequest.headers[canonicalForm: "Sec-WebSocket-Key"]
        let versions = upgradeRequest.headers[canonicalForm: "Sec-WebSocket-Version"]
        guard keys.count == 1, versions.count == 1, versions[0] == "13" else {
            return channel.eventLoop.makeFailedFuture(NIOWebSocketUpgradeError.invalidUpgradeHeader)
        }
        let accept = WebSocketAccept.value(key: String(keys[0]))
        return shouldUpgrade(channel, upgradeRequest).flatMapThrowing { extra in
            guard var headers = extra else { throw NIOWebSocketUpgradeError.unsupportedWebSocketTarget }
            headers.replaceOrAdd(name: "Upgrade", value: "websocket")
            headers.add(name: "Sec-WebSocket-Accept", value: accept)
            headers.replaceOrAdd(name: "Connection", value: "upgrade")
            return headers
        }
    }

    func upgrade(channel: any Channel, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<UpgradeResult> {
        upgradePipelineHandler(channel, upgradeRequest)
    }
}

/// `Sec-WebSocket-Accept` (RFC 6455 4.2.2): the base64 SHA-1 of the client's key and the
/// protocol's GUID.
enum WebSocketAccept {
    static let guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    static func value(key: String) -> String {
        var out = ByteBuffer()
        write(key: key, into: &out)
        return String(buffer: out)
    }

    /// Writes the value into `buffer` (28 bytes), with no intermediate copies.
    static func write(key: String, into buffer: inout ByteBuffer) {
        var hasher = Insecure.SHA1()
        var key = key
        key.withUTF8 { hasher.update(bufferPointer: UnsafeRawBufferPointer($0)) }
        var guid = guid
        guid.withUTF8 { hasher.update(bufferPointer: UnsafeRawBufferPointer($0)) }
        hasher.finalize().withUnsafeBytes { digest in
            // 20 bytes: six groups of three, then two bytes and one pad.
            var index = 0
            while index < digest.count {
                let left = digest.count - index
                let b0 = UInt32(digest[index]), b1 = left > 1 ? UInt32(digest[index + 1]) : 0, b2 = left > 2 ? UInt32(digest[index + 2]) : 0
                let group = b0 << 16 | b1 << 8 | b2
                buffer.writeInteger(alphabet[Int(group >> 18 & 63)])
                buffer.writeInteger(alphabet[Int(group >> 12 & 63)])
                buffer.writeInteger(left > 1 ? alphabet[Int(group >> 6 & 63)] : UInt8(ascii: "="))
                buffer.writeInteger(left > 2 ? alphabet[Int(group & 63)] : UInt8(ascii: "="))
                index += 3
            }
        }
    }

    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
}
