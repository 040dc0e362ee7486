import Hummingbird
import HummingbirdCore
import Logging
import NIOHTTP1

extension Router where Context == BasicRequestContext {
    /// What a server's HTTP connections answer with: the router's response (an error thrown by
    /// a route that is not an `HTTPResponseError` is a 500), with `Date` and `Server`. A request
    /// the parser rejects under way is left to the connection, which answers 400 and closes.
    package func connectionResponder(serverName: String, logger: Logger) -> HTTPChannelHandler.Responder {
        let responder = buildResponder()
        return { request, writer, channel in
            var response: Response
            do {
                response = try await responder.respond(
                    to: request, context: BasicRequestContext(source: .init(channel: channel, logger: logger)))
            } catch let error as HTTPParserError {
                throw error
            } catch {
                logger.debug("a route failed", metadata: ["error": "\(error)"])
                response = Response(status: .internalServerError)
            }
            response.headers[.date] = HTTPDate.now
            response.headers[.server] = serverName
            do {
                try await writer.write(response: response.head, body: response.body)
            } catch is HTTPParserError {
                // Not this error: the connection would answer it with a second response.
                throw ResponseNotWritten()
            }
        }
    }
}

/// The request broke off while its response was written.
private struct ResponseNotWritten: Error {}
