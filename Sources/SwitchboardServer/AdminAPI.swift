import HTTPTypes
import Hummingbird
import NIOCore
import SwitchboardCore
import SwitchboardHTTP
import SwitchboardProtocol

/// `GET /api/admin/stats`: what the admin page shows of one node (docs/PROTOCOL.md, "Admin").
/// The page asks every node of the cluster, so the endpoint answers other nodes' pages too
/// (CORS), for the origins `NodeContext.originAllowed` admits, and only with the API key.
enum AdminAPI {
    /// Rooms listed per node, the most populated first.
    static let roomLimit = 100

    static func add(to router: Router<BasicRequestContext>, node: NodeContext) {
        let admin = pageGroup(router, "api/admin", node: node)
        // The browser's preflight for a cross-origin GET with `Authorization`: answered by the
        // CORS middleware before the key is asked for; this route only makes the path match.
        admin.on("stats", method: .options) { _, _ in Response(status: .noContent) }
        admin.get("stats") { _, _ in
            JSONResponse.json(.ok, stats(node))
        }
    }

    /// A group of API routes that pages of the cluster's nodes may call from another node
    /// (CORS), with the API's key and error handling.
    static func pageGroup(
        _ router: Router<BasicRequestContext>, _ path: RouterPath, node: NodeContext
    ) -> RouterGroup<BasicRequestContext> {
        let group = router.group(path)
        group.add(middleware: PageCORSMiddleware(node: node))
        group.add(middleware: InternalErrorMiddleware(logger: node.logger, failures: node.metrics.commandsFailed))
        if let key = node.configuration.apiKey {
            group.add(middleware: APIKeyMiddleware(key: key))
        }
        return group
    }

    static func stats(_ node: NodeContext) -> JSONValue {
        let load = node.router.load
        let (rooms, total) = node.router.localRooms(limit: roomLimit)
        let phase =
            switch node.phase {
            case .starting: "starting"
            case .ready: "ready"
            case .draining: "draining"
            }
        let history = node.router.backplane.history
        return .object([
            "node": .string(node.configuration.nodeID),
            "phase": .string(phase),
            "started": .number(String(node.startedAt)),
            "now": .number(String(wallClockMilliseconds())),
            "connections": .number(String(load.connections)),
            "users": .number(String(load.users)),
            "rooms": .number(String(total)),
            "history": .object(["size": .number(String(history.size)), "ttl": .number(String(history.ttlSeconds))]),
            "counters": .object(
                Dictionary(uniqueKeysWithValues: node.metrics.tallies.map { ($0.name, JSONValue.number(String($0.value))) })),
            "top_rooms": .array(
                rooms.map { room in
                    .object([
                        "room": .string(room.name), "users": .number(String(room.users)),
                        "connections": .number(String(room.connections)),
                    ])
                }),
        ])
    }
}

/// Lets the pages of the cluster's nodes call this node (admin stats, assign): a request with an
/// `Origin` from a page gets it echoed in `Access-Control-Allow-Origin` if that origin is
/// admitted, else 403; the preflight is answered here, before the API key is asked for.
struct PageCORSMiddleware<Context: RequestContext>: RouterMiddleware {
    let node: NodeContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let origin = request.headers[.origin] else { return try await next(request, context) }
        guard await node.originAllowed(origin) else {
            throw APIError(.forbidden, .forbidden, "origin \(origin) is not allowed")
        }
        var response: Response
        if request.method == .options {
            response = Response(status: .noContent)
            response.headers[.accessControlAllowMethods] = "GET"
            response.headers[.accessControlAllowHeaders] = "authorization"
            response.headers[.accessControlMaxAge] = "600"
        } else {
            do {
                response = try await next(request, context)
            } catch let error as any HTTPResponseError {
                // A refusal (a wrong key) must reach the page as what it is, not as a CORS failure.
                response = try error.response(from: request, context: context)
            }
        }
        response.headers[.accessControlAllowOrigin] = origin
        response.headers[.vary] = "Origin"
        return response
    }
}
