import Foundation
import SwitchboardProtocol

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

package struct HTTPReply {
    package let status: Int
    package let body: String
    /// Response headers, by lowercased name.
    package var headers: [String: String] = [:]
    package var json: JSONValue? { try? JSONValue.parse(body) }
}

/// One HTTP request to a node.
package func http(_ method: String, _ url: String, body: String? = nil, headers: [String: String] = [:]) async throws -> HTTPReply {
    var request = URLRequest(url: URL(string: url)!)
    request.httpMethod = method
    request.timeoutInterval = 10
    if let body {
        request.httpBody = Data(body.utf8)
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
    }
    for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
    let (data, response) = try await URLSession.shared.data(for: request)
    let reply = response as! HTTPURLResponse
    var headers: [String: String] = [:]
    for (name, value) in reply.allHeaderFields {
        if let name = name as? String, let value = value as? String { headers[name.lowercased()] = value }
    }
    return HTTPReply(status: reply.statusCode, body: String(decoding: data, as: UTF8.self), headers: headers)
}
