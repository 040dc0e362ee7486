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
