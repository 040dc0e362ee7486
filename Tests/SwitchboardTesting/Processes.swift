import Foundation
import NIOPosix

/// `swift test` builds the `switchboard` executable next to the test bundle.
package var switchboardExecutable: URL {
    URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("switchboard")
}

/// A base port with `count` consecutive free ports after it (checked by binding them). Drawn
/// below the kernel's ephemeral range (32768 and up here), so that outgoing connections of other
/// tests cannot take it between this check and the server's bind.
package func freePorts(_ count: Int) async throws -> Int {
    for _ in 0..<50 {
        let base = Int.random(in: 20000...32000)
        var free = true
        for port in base..<(base + count) {
            do {
                let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .bind(host: "127.0.0.1", port: port).get()
                try await channel.close()
            } catch {
                free = false
                break
            }
        }
        if free { return base }
    }
    throw TimedOut(what: "free ports")
}

/// Runs `switchboard` with these arguments until it exits; its status and standard error.
package func runToExit(_ arguments: [String], environment: [String: String] = [:]) async throws -> (Int32, String) {
    let process = Process()
    process.executableURL = switchboardExecutable
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let errors = Pipe()
    process.standardError = errors
    process.standardOutput = FileHandle.nullDevice
    try process.run()
    do {
        // Generous: a debug build starting while the full suite loads both cores has taken
        // more than 10 s (seen in CI), as NodeProcess notes too.
        try await eventually("\(arguments) to exit", timeout: .seconds(30)) { !process.isRunning }
    } catch {
        process.terminate()
        throw error
    }
    return (process.terminationStatus, String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
}

/// Runs `body` with a blocking TCP socket connected to 127.0.0.1:`port` (reads time out after
/// a second); nil when nothing accepts there. For probing servers the tests start.
package func withLoopbackSocket<T>(port: Int, _ body: (Int32) -> T?) -> T? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 1, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
    return connected ? body(fd) : nil
}

/// Runs a tool (`redis-cli`, `rabbitmqctl`, `chown`) to its end; returns what it printed, and
/// throws when it exits with another status than 0.
@discardableResult
package func runTool(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
    let output = Pipe()
    process.standardOutput = output
    process.standardError = FileHandle.nullDevice
    try process.run()
    let printed = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw ToolFailed(command: ([executable] + arguments).joined(separator: " "), status: process.terminationStatus)
    }
    return printed
}

package struct ToolFailed: Error, CustomStringConvertible {
    let command: String
    let status: Int32
    package var description: String { "\(command) exited \(status)" }
}
