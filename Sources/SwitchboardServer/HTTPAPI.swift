import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Prometheus
import SwitchboardCore
import SwitchboardHTTP
import SwitchboardProtocol

/// The HTTP side of a node: server-side publishing, inspection, health and metrics.
enum HTTPAPI {
    static func router(_ node: NodeContext) -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.get("/healthz") { _, _ in JSONResponse.json(.ok, "{\"ok\":true}") }
        router.get("/readyz") { _, _ in
            switch node.phase {
            case .ready: JSONResponse.json(.ok, "{\"ready\":true}")
            case .starting: JSONResponse.json(.serviceUnavailable, "{\"ready\":false,\"phase\":\"starting\"}")
            case .draining: JSONResponse.json(.serviceUnavailable, "{\"ready\":false,\"phase\":\"draining\"}")
            }
        }
        router.get("/metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(bytes: node.metrics.render())))
        }
        WebPages.add(to: router, node: node)
        AdminAPI.add(to: router, node: node)
        // Its own group: switchboard.js asks any node of the cluster before reconnecting (CORS).
        let assign = AdminAPI.pageGroup(router, "api/assign", node: node)
        assign.on("", method: .options) { _, _ in Response(status: .noContent) }
        assign.get { _, _ in
            let nodes = try await node.router.backplane.nodes().filter(\.alive)
            guard let best = nodes.min(by: { ($0.load.connections, $0.info.id) < ($1.load.connections, $1.info.id) }) else {
                return JSONResponse.json(.serviceUnavailable, "{\"error\":\"internal\",\"message\":\"no live node\"}")
            }
            return JSONResponse.json(.ok, .object(["node": .string(best.info.id), "url": .string(best.info.url)]))
        }
        let api = router.group("api")
        api.add(middleware: InternalErrorMiddleware(logger: node.logger, failures: node.metrics.commandsFailed))
        if let key = node.configuration.apiKey {
            api.add(middleware: APIKeyMiddleware(key: key))
        }
        api.post("publish") { request, _ in
            let body = try await readBody(request, node)
            let room = try name(body, "room")
            try await node.publish(from: "server", to: .room(room), data: try data(body))
            return JSONResponse.json(.ok, "{\"ok\":true}")
        }
        api.post("send") { request, _ in
            let body = try await readBody(request, node)
            let user = try name(body, "to")
            let payload = try data(body)
            guard try await node.router.isOnline(user) else {
                return JSONResponse.json(.notFound, "{\"error\":\"offline\",\"message\":\"the user is not connected to any node\"}")
            }
            try await node.publish(from: "server", to: .user(user), data: payload)
            return JSONResponse.json(.ok, "{\"ok\":true}")
        }
        api.post("broadcast") { request, _ in
            let body = try await readBody(request, node)
            try await node.publish(from: "server", to: .everyone, data: try data(body))
            return JSONResponse.json(.ok, "{\"ok\":true}")
        }
        api.get("presence/**") { _, context in
            let room = try pathName(context)
            let users = try await node.router.backplane.members(of: room)
            return JSONResponse.json(.ok, .object(["room": .string(room), "users": .array(users.map(JSONValue.string))]))
        }
        api.get("history/**") { request, context in
            let room = try pathName(context)
            let history = node.router.backplane.history
            guard history.isOn else { throw APIError(.notImplemented, .unsupported, "this cluster keeps no history") }
            var limit = history.size
            if let text = request.uri.queryParameters["limit"] {
                guard let value = Int(String(text)), (1...history.size).contains(value) else {
                    throw APIError(.badRequest, .badRequest, "limit must be an integer from 1 to \(history.size), the history size")
                }
                limit = value
            }
            let read = try await node.router.backplane.read(.room(room), after: nil, limit: limit)
            var out = JSONWriter()
            out.raw("{\"room\":")
            out.string(room)
            out.raw(",\"epoch\":")
            out.string(read.top.epoch)
            out.raw(",\"offset\":")
            out.number(read.top.offset)
            out.raw(",\"messages\":[")
            for (index, message) in read.messages.enumerated() {
                if index > 0 { out.raw(",") }
                out.raw(ServerFrame.message(message))
            }
            out.raw("]}")
            return Response(
                status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: out.bytes)))
        }
        api.get("users/**") { _, context in
            let user = try pathName(context)
            let nodes = try await node.router.backplane.nodes(of: user)
            return JSONResponse.json(
                .ok, .object(["user": .string(user), "online": .bool(!nodes.isEmpty), "nodes": .array(nodes.map(JSONValue.string))]))
        }
        api.get("nodes") { _, _ in
            let nodes = try await node.router.backplane.nodes()
            return JSONResponse.json(.ok, .object(["nodes": .array(nodes.map(JSONResponse.node))]))
        }
        return router
    }

    // MARK: Helpers

    static func readBody(_ request: Request, _ node: NodeContext) async throws -> JSONFields {
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: node.configuration.maxFrameBytes)
        } catch {
            throw APIError(.contentTooLarge, .tooLarge, "the body is larger than \(node.configuration.maxFrameBytes) bytes")
        }
        do {
            return try JSONFields.read(Array(buffer.readableBytesView))
        } catch let error as ProtocolError {
            throw APIError(.badRequest, error.code, error.message)
        }
    }

    static func name(_ body: JSONFields, _ key: String) throws -> String {
        guard let value = body.values[key] else { throw APIError(.badRequest, .badRequest, "missing field '\(key)'") }
        guard case .string(let text) = value else { throw APIError(.badRequest, .badRequest, "'\(key)' must be a string") }
        guard Name.isValid(text) else {
            throw APIError(.badRequest, .invalidName, "'\(key)' must be 1 to 128 characters of A-Z a-z 0-9 _ . : @ / -")
        }
        return text
    }

    static func data(_ body: JSONFields) throws -> RawJSON {
        guard let range = body.data else { throw APIError(.badRequest, .badRequest, "missing field 'data'") }
        return RawJSON(bytes: Array(body.bytes[range]))
    }

    /// A name at the end of the path; it may contain `/`, and may be percent-encoded.
    static func pathName(_ context: BasicRequestContext) throws -> String {
        let raw = context.parameters.getCatchAll().joined(separator: "/")
        let text = raw.removingPercentEncoding ?? raw
        guard Name.isValid(text) else {
            throw APIError(.badRequest, .invalidName, "names are 1 to 128 characters of A-Z a-z 0-9 _ . : @ / -")
        }
        return text
    }
}

/// An API failure with the protocol's JSON body: `{"error":"<code>","message":".."}`.
struct APIError: HTTPResponseError {
    let status: HTTPResponse.Status
    let code: String
    let message: String

    init(_ status: HTTPResponse.Status, _ code: ErrorCode, _ message: String) {
        self.init(status, code: code.rawValue, message)
    }

    init(_ status: HTTPResponse.Status, code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        JSONResponse.json(status, .object(["error": .string(code), "message": .string(message)]))
    }
}

/// Turns a failure that is not the client's fault into a logged 500 with the protocol's body.
struct InternalErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let logger: Logger
    let failures: Tally

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as any HTTPResponseError {
            throw error
        } catch {
            failures.increment()
            logger.debug("API request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            throw APIError(.internalServerError, .internal, "the cluster could not take the request; try again")
        }
    }
}

/// Requires `Authorization: Bearer <api key>`, compared in constant time.
struct APIKeyMiddleware<Context: RequestContext>: RouterMiddleware {
    let key: [UInt8]

    init(key: String) {
        self.key = Array(key.utf8)
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let header = request.headers[.authorization] ?? ""
        let prefix = "Bearer "
        let given = header.hasPrefix(prefix) ? Array(header.utf8.dropFirst(prefix.utf8.count)) : []
        guard constantTimeEqual(given, key) else {
            throw APIError(.unauthorized, code: "unauthorized", "a valid API key is required: Authorization: Bearer <key>")
        }
        return try await next(request, context)
    }
}
