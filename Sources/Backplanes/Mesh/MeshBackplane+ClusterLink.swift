import ClusterLink
import Logging
import NIOCore
import NIOWebSocket

/// The node hands the mesh each link dialled to its `/cluster`, upgraded, with the decoder
/// sized by `maxLinkFrameBytes`; the mesh reads and writes its frames (`AcceptedLink`) and runs
/// the link protocol on them. A dead peer is noticed by the mesh's own heartbeats.
extension MeshBackplane: ClusterLinkAcceptor {
    public var linkSecret: String { configuration.secret }

    public var maxLinkFrameBytes: Int { Self.maxLinkFrame }

    public func serveLink(_ link: NIOAsyncChannel<WebSocketFrame, WebSocketFrame>, logger: Logger) async throws {
        try await link.executeThenClose { inbound, outbound in
            let accepted = AcceptedLink(outbound: outbound)
            var reader = AcceptedLink.Reader(frames: inbound.makeAsyncIterator(), link: accepted, maxMessage: Self.maxLinkFrame)
            try await acceptLink(accepted, reader: &reader)
            try? await accepted.close(.normalClosure)
        }
    }
}
