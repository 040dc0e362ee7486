import ClusterLink
import Logging
import NIOCore
import NIOWebSocket
@_spi(WSInternal) import WSCore

/// The node hands the mesh each link dialled to its `/cluster`, upgraded, with the decoder
/// sized by `maxLinkFrameBytes`; the mesh runs the WebSocket (pings every heartbeat, the close
/// handshake) and the link protocol on it.
extension MeshBackplane: ClusterLinkAcceptor {
    public var linkSecret: String { configuration.secret }

    public var maxLinkFrameBytes: Int { Self.maxLinkFrame }

    public func serveLink(_ link: NIOAsyncChannel<WebSocketFrame, WebSocketFrame>, logger: Logger) async throws {
        _ = try await WebSocketHandler.handle(
            type: .server,
            configuration: .init(
                extensions: [], autoPing: .enabled(timePeriod: configuration.heartbeat), closeTimeout: .seconds(5),
                validateUTF8: true, maxFrameSize: Self.maxLinkFrame),
            asyncChannel: link, context: LinkContext(logger: logger)
        ) { inbound, outbound, _ in
            try await self.acceptLink(inbound: inbound, outbound: outbound)
        }
    }
}

/// What a link's handler is given besides its streams.
struct LinkContext: WebSocketContext {
    let logger: Logger
}
