import Logging
import NIOCore
import NIOWebSocket
import SwitchboardCore

/// The seam between a node and a backplane whose peers link straight to each node: the node
/// serves `GET /cluster` on its own port, checks the secret, upgrades, sizes the frame decoder,
/// and hands the link over. The node names no such backplane; it only asks for this protocol.
public protocol ClusterLinkAcceptor: Backplane {
    /// What a link must present as `Authorization: Bearer <secret>`.
    var linkSecret: String { get }
    /// The largest frame a link may carry (links carry more than client frames: a whole sync, a
    /// message with its envelope).
    var maxLinkFrameBytes: Int { get }
    /// Serves one admitted, upgraded link until it ends.
    func serveLink(_ link: NIOAsyncChannel<WebSocketFrame, WebSocketFrame>, logger: Logger) async throws
}
