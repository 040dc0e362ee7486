import Foundation

/// The browser side of a node: the demo page (`/`), the admin page (`/admin`) and the JavaScript
/// client (`/switchboard.js`), read once from the files in `Assets/` (kept in the repository as
/// they are served: no build step).
package struct WebAsset: Sendable {
    /// The path a node serves it at.
    package let path: String
    package let contentType: String
    package let bytes: [UInt8]
    /// HTML gets the Content-Security-Policy; scripts and styles need none of their own.
    package var isPage: Bool { contentType.hasPrefix("text/html") }
}

package enum WebAssets {
    /// Served path → file in `Assets/`.
    static let files: [(path: String, file: String)] = [
        ("/", "index.html"), ("/admin", "admin.html"), ("/switchboard.js", "switchboard.js"), ("/demo.js", "demo.js"),
        ("/admin.js", "admin.js"), ("/style.css", "style.css"),
    ]

    /// Every asset; a file missing is left out (and `missing` names it).
    package static let all: [WebAsset] = files.compactMap { entry in
        guard let folder = assetsFolder,
            let data = try? Data(contentsOf: folder.appendingPathComponent(entry.file))
        else { return nil }
        return WebAsset(path: entry.path, contentType: contentType(of: entry.file), bytes: Array(data))
    }

    /// SwiftPM's resource bundle, `switchboard_SwitchboardWeb.resources`, beside the executable
    /// (where `swift build` puts it, and where a deployment copies it). Looked up here rather
    /// than through `Bundle.module`, which stops the process when the bundle is missing: a node
    /// without its pages still serves everything else.
    static let assetsFolder: URL? = {
        let executable = URL(fileURLWithPath: CommandLine.arguments.first ?? "").resolvingSymlinksInPath()
        let places = [executable.deletingLastPathComponent(), Bundle.main.bundleURL, Bundle.main.resourceURL].compactMap { $0 }
        for place in places {
            for name in ["switchboard_SwitchboardWeb.resources", "switchboard_SwitchboardWeb.bundle/Contents/Resources"] {
                let folder = place.appendingPathComponent(name).appendingPathComponent("Assets")
                if FileManager.default.fileExists(atPath: folder.appendingPathComponent("switchboard.js").path) { return folder }
            }
        }
        return nil
    }()

    package static var missing: [String] {
        let present = Set(all.map(\.path))
        return files.filter { !present.contains($0.path) }.map(\.file)
    }

    static func contentType(of file: String) -> String {
        if file.hasSuffix(".html") { return "text/html; charset=utf-8" }
        if file.hasSuffix(".js") { return "text/javascript; charset=utf-8" }
        return "text/css; charset=utf-8"
    }

    /// The policy of every page: scripts, styles and images only from the node itself, no inline
    /// script or style, no frames, no forms posting elsewhere; connections only to the node and
    /// to `origins` (the cluster's nodes, for reconnecting elsewhere and the admin's per-node
    /// stats).
    package static func contentSecurityPolicy(connectingTo origins: [String]) -> String {
        let connect = (["'self'"] + origins).joined(separator: " ")
        return "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src \(connect); "
            + "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    }

    /// The HTTP and WebSocket origins of a node from its WebSocket URL
    /// (`ws://127.0.0.1:8081/ws` → `http://127.0.0.1:8081`, `ws://127.0.0.1:8081`), or nil.
    package static func origins(ofWebSocketURL url: String) -> (http: String, webSocket: String)? {
        let secure: Bool
        let rest: Substring
        if url.hasPrefix("wss://") {
            (secure, rest) = (true, url.dropFirst(6))
        } else if url.hasPrefix("ws://") {
            (secure, rest) = (false, url.dropFirst(5))
        } else {
            return nil
        }
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        // Only what an origin may hold: a header value must never be bent by an advertised URL.
        guard !authority.isEmpty,
            authority.allSatisfy({ $0.isLetter || $0.isNumber || ".-:[]_".contains($0) }),
            authority.allSatisfy(\.isASCII)
        else { return nil }
        return (secure ? "https://\(authority)" : "http://\(authority)", secure ? "wss://\(authority)" : "ws://\(authority)")
    }
}
