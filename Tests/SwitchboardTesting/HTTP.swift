import Foundation
import SwitchboardProtocol

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

package struct HTTPReply {
    package let status: Int
    package let body: String
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
    return HTTPReply(status: (response as! HTTPURLResponse).statusCode, body: String(decoding: data, as: UTF8.self))
}
