import SwitchboardClient
import SwitchboardProtocol
import SwitchboardTesting
import Testing

/// Heartbeats, slow consumers and draining: the ways a connection or a node goes away.
@Suite("Connection and node lifecycle")
struct LifecycleTests {
    @Test func aClientThatAnswersNoPingIsClosedAndLeavesPresence() async throws {
        // 4 s: the ghost is closed 1-2 periods after it connects (the ping timer is per event
        // loop), which on a loaded run must leave time for its join first.
        try await withCluster(nodes: 2, configure: { $0.heartbeatSeconds = 4 }) { cluster in
            let watcher = try await cluster.connect(1, user: "watcher")
            try await watcher.client.join("room")
            let ghost = try await RawWebSocket.connect(port: cluster.ports[0], path: "/ws?user=ghost")
            defer { ghost.close() }
            try await eventually("welcome") { ghost.received.contains("welcome") }
            try await ghost.sendText(#"{"type":"join","room":"room"}"#)
            _ = try await watcher.next("joined") { $0.type == "joined" && $0.user == "ghost" }

            // The ghost reads (so it sees the pings) but never answers them.
            try await eventually("the server to close the silent connection", timeout: .seconds(25)) { ghost.isClosed }
            #expect(ghost.receivedBytes.contains(0x89), "the server sent a ping first")
            _ = try await watcher.next("left", timeout: .seconds(10)) { $0.type == "left" && $0.user == "ghost" }
            #expect(try await watcher.client.presence("room") == ["watcher"])
            // The watcher, whose client answers pings, outlived several periods.
            try await watcher.client.ping()
        }
    }

    @Test func aSlowConsumerIsClosedWithoutHoldingUpTheOthers() async throws {
        try await withCluster(
            nodes: 2,
            configure: {
                // 1 MiB: room for the healthy client to fall behind a little on a loaded machine.
                $0.maxBufferedBytes = 1024 * 1024
                $0.maxFrameBytes = 64 * 1024
            }
        ) { cluster in
            let healthy = try await cluster.connect(0, user: "healthy")
            try await healthy.client.join("firehose")
            let slow = try await RawWebSocket.connect(port: cluster.ports[0], path: "/ws?user=slow", receiveBuffer: 4096)
            defer { slow.close() }
            try await eventually("welcome") { slow.received.contains("welcome") }
            try await slow.sendText(#"{"type":"join","room":"firehose","id":1}"#)
            try await eventually("the join reply") { slow.received.contains(#""type":"ok""#) }
            try await slow.stopReading()

            // ~10 MB: more than the kernel buffers of the slow socket plus the 1 MiB bound.
            let publisher = try await cluster.connect(1, user: "publisher")
            let chunk = String(repeating: "x", count: 16 * 1024)
            let count = 600
            for n in 0..<count {
                try await publisher.client.publish("firehose", data: #"{"n":\#(n),"pad":"\#(chunk)"}"#)
            }
            for n in 0..<count {
                let message = try await healthy.message()
                #expect(message.data?["n"]?.int == n)
            }
            _ = try await healthy.next("left of the slow consumer") { $0.type == "left" && $0.user == "slow" }
            let metrics = try await http("GET", cluster.http(0, "/metrics"))
            #expect(metrics.body.contains("switchboard_slow_consumers_closed_total 1"))
        }
    }

    @Test func drainingClosesWith1001AndLeavesTheCluster() async throws {
        try await withCluster(nodes: 2, configure: { $0.drainTimeoutSeconds = 3 }) { cluster in
            let watcher = try await cluster.connect(1, user: "watcher")
            try await watcher.client.join("room")
            let leaving = try await cluster.connect(0, user: "leaving")
            try await leaving.client.join("room")
            // A client that never answers the close handshake keeps the drain going for a while.
            let stubborn = try await RawWebSocket.connect(port: cluster.ports[0], path: "/ws?user=stubborn")
            defer { stubborn.close() }
            try await eventually("welcome") { stubborn.received.contains("welcome") }

            await cluster.beginStopping(0)
            try await eventually("readyz 503") { try await http("GET", cluster.http(0, "/readyz")).status == 503 }
            #expect(await leaving.client.closeCode() == 1001)
            try await eventually("a close frame with 1001") { stubborn.receivedClose(code: 1001) }
            // The stubborn socket is still open, so the node is still draining.
            #expect(try await http("GET", cluster.http(0, "/readyz")).status == 503)
            // The drain ends anyway: the socket is closed when the close handshake times out.
            let started = ContinuousClock.now
            try await cluster.stopNode(0)
            #expect(ContinuousClock.now - started < .seconds(10))

            _ = try await watcher.next("left") { $0.type == "left" && $0.user == "leaving" }
            #expect(try await watcher.client.presence("room") == ["watcher"])
            let nodes = try await http("GET", cluster.http(1, "/api/nodes")).json?["nodes"]?.array ?? []
            #expect(nodes.map { $0["alive"] } == [.bool(false), .bool(true)])
            #expect(try await http("GET", cluster.http(1, "/api/assign")).json?["node"] == .string("n2"))
        }
    }

    /// The node's own listener on shutdown: an HTTP keep-alive connection left open (browsers
    /// keep them) is asked to finish and closed, so it does not hold the node up, and a client
    /// socket is the drain's (1001). The API's answers carry `Date` and `Server`.
    @Test func shutdownClosesIdleKeepAlivesAndTheNodeStops() async throws {
        // The keep-alive's own deadline is far off: only the shutdown can close it.
        try await withCluster(nodes: 1, configure: { $0.handshakeTimeoutSeconds = 120 }) { cluster in
            let client = try await cluster.connect(0, user: "client")
            let keptAlive = try await RawWebSocket.open(port: cluster.ports[0])
            defer { keptAlive.close() }
            try await keptAlive.write(Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
            try await eventually("the answer") { keptAlive.received.contains("{\"ok\":true}") }
            let head = keptAlive.received.lowercased()
            #expect(head.contains("\r\ndate: ") && head.contains(" gmt\r\n"))
            #expect(head.contains("\r\nserver: switchboard\r\n"))
            #expect(!keptAlive.isClosed)
            let stopping = Task { try await cluster.stopNode(0) }
            #expect(await client.client.closeCode() == 1001)
            try await eventually("the keep-alive to be closed", timeout: .seconds(30)) { keptAlive.isClosed }
            try await stopping.value
        }
    }
}
