import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1
import SwitchboardCore
import SwitchboardProtocol

/// JSON answers shared by a node's HTTP API and the hub's: bodies, refusals before an upgrade,
/// and the secret checks in front of them.
package enum JSONResponse {
    package static func json(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    package static func json(_ status: HTTPResponse.Status, _ value: JSONValue) -> Response {
        var writer = JSONWriter()
        writer.value(value)
        return Response(
            status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: writer.bytes)))
    }

    /// One node as `/api/nodes` shows it.
    package static func node(_ status: NodeStatus) -> JSONValue {
        .object([
            "id": .string(status.info.id), "url": .string(status.info.url),
            "connections": .number(String(status.load.connections)), "users": .number(String(status.load.users)),
            "alive": .bool(status.alive),
        ])
    }

    /// Answers a refused upgrade with a JSON error before any upgrade, then ends our side of
    /// the connection. (Hummingbird's own answer to a declined upgrade, an empty 400, then finds
    /// the output closed and is dropped.)
    package static func refuse(_ channel: any Channel, status: HTTPResponseStatus, code: String, message: String) async {
        var writer = JSONWriter()
        writer.value(.object(["error": .string(code), "message": .string(message)]))
        let body = channel.allocator.buffer(bytes: writer.bytes)
        let head = HTTPResponseHead(
            version: .http1_1, status: status,
            headers: ["Content-Type": "application/json", "Content-Length": "\(body.readableBytes)", "Connection": "close"])
        channel.write(HTTPServerResponsePart.head(head), promise: nil)
        channel.write(HTTPServerResponsePart.body(.byteBuffer(body)), promise: nil)
        try? await channel.writeAndFlush(HTTPServerResponsePart.end(nil))
        try? await channel.close(mode: .output)
    }
}

/// The token of `Authorization: Bearer <token>`, if the request has one.
package func bearerToken(_ request: HTTPRequest) -> String? {
    bearerToken(authorization: request.headerFields[.authorization])
}

/// The token of an `Authorization: Bearer <token>` value.
package func bearerToken(authorization: String?) -> String? {
    guard let authorization, authorization.hasPrefix("Bearer ") else { return nil }
    return String(authorization.dropFirst("Bearer ".count))
}

/// Compares a secret in time that depends only on the lengths, never on where the bytes differ.
/// A length mismatch alone makes them unequal (it is not folded into one byte, where 256 extra
/// bytes would cancel out).
package func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    var difference = UInt8(0)
    for i in 0..<max(a.count, b.count) {
        difference |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0)
    }
    return difference == 0 && a.count == b.count
}
