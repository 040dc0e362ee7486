import HTTPTypes
import Hummingbird
import NIOCore
import SwitchboardWeb

/// The pages a node serves to browsers (docs/BROWSER.md): the demo at `/`, the admin view at
/// `/admin`, and `switchboard.js`, each with headers that keep them strict.
enum WebPages {
    static func add(to router: Router<BasicRequestContext>, node: NodeContext) {
        if !WebAssets.missing.isEmpty {
            node.logger.warning(
                "pages not served, their files are missing: \(WebAssets.missing.joined(separator: ", ")) (copy switchboard_SwitchboardWeb.resources beside the executable)"
            )
        }
        for asset in WebAssets.all {
            let body = ByteBuffer(bytes: asset.bytes)
            router.get(RouterPath(asset.path)) { _, _ in
                var headers: HTTPFields = [
                    .contentType: asset.contentType, .cacheControl: "no-cache", .xContentTypeOptions: "nosniff",
                    HTTPField.Name("Referrer-Policy")!: "no-referrer",
                ]
                if asset.isPage {
                    headers[.contentSecurityPolicy] = WebAssets.contentSecurityPolicy(connectingTo: await node.clusterOrigins())
                    headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
                }
                return Response(status: .ok, headers: headers, body: .init(byteBuffer: body))
            }
        }
    }
}

extension NodeContext {
    /// The HTTP and WebSocket origins of every node the cluster knows (empty if it cannot say).
    func clusterOrigins() async -> [String] {
        let nodes = (try? await router.backplane.nodes()) ?? []
        return nodes.compactMap { WebAssets.origins(ofWebSocketURL: $0.info.url) }.flatMap { [$0.http, $0.webSocket] }
    }

    /// Whether a browser page from `origin` may open a WebSocket or read the admin stats: any
    /// origin without `--allowed-origins`; with it, those listed and the cluster's own nodes
    /// (so the pages the nodes serve keep working).
    func originAllowed(_ origin: String) async -> Bool {
        guard let allowed = configuration.allowedOrigins, !allowed.contains(origin) else { return true }
        return await clusterOrigins().contains(origin)
    }
}
