import SwitchboardClient
import SwitchboardCore
import SwitchboardProtocol
import Testing

/// Every row of the protocol across three running nodes (`switchboard serve` processes), whatever
/// backplane joins them. Used by the Redis and the hub suites.
package func exerciseProtocolRows(_ nodes: [NodeProcess], assignFrom assigner: NodeProcess? = nil) async throws {
    let alice = try await nodes[0].connect(user: "alice")
    let bob = try await nodes[1].connect(user: "bob")
    let carol = try await nodes[2].connect(user: "carol")
    #expect([alice, bob, carol].map(\.client.welcome.node) == ["n1", "n2", "n3"])

    // join / publish: subscribers on other nodes get it, one id; the unsubscribed sender does not.
    try await bob.client.join("lobby")
    try await carol.client.join("lobby")
    _ = try await bob.next("joined carol") { $0.type == "joined" && $0.user == "carol" }
    try await alice.client.publish("lobby", data: #"{"n":1}"#)
    let atBob = try await bob.message(), atCarol = try await carol.message()
    #expect(atBob.id == atCarol.id && atBob.from == "alice" && atBob.room == "lobby")
    try await alice.client.send(to: "alice", data: "\"marker\"")
    _ = try await alice.message { $0.data == .string("marker") }
    #expect(await alice.received().filter { $0.room == "lobby" }.isEmpty)

    // presence, cluster-wide
    #expect(try await alice.client.presence("lobby") == ["bob", "carol"])
    let users = try await http("GET", nodes[0].http("/api/presence/lobby")).json
    #expect(users?["users"] == .array([.string("bob"), .string("carol")]))

    // send: every connection of the user, on every node; offline refused
    let bobAgain = try await nodes[2].connect(user: "bob")
    try await alice.client.send(to: "bob", data: "\"dm\"")
    _ = try await bob.message { $0.data == .string("dm") }
    _ = try await bobAgain.message { $0.data == .string("dm") }
    let offline = try await alice.client.request(.send(to: "nobody", data: RawJSON("1")))
    #expect(offline.code == "offline")
    #expect(try await http("GET", nodes[1].http("/api/users/bob")).json?["nodes"] == .array([.string("n2"), .string("n3")]))

    // broadcast reaches every connection, the sender's included
    try await carol.client.broadcast(data: "\"all\"")
    for client in [alice, bob, bobAgain, carol] { _ = try await client.message { $0.isBroadcast } }

    // leave, and `left` once when the user's last connection in the room goes
    try await carol.client.leave("lobby")
    _ = try await bob.next("left carol") { $0.type == "left" && $0.user == "carol" }
    try await alice.client.publish("lobby", data: "\"after leave\"")
    _ = try await bob.message { $0.data == .string("after leave") }
    try await alice.client.send(to: "carol", data: "\"marker\"")
    _ = try await carol.message { $0.data == .string("marker") }
    #expect(await carol.received().filter { $0.room == "lobby" && $0.type == "message" }.isEmpty)

    // one sender's messages stay in order across nodes
    for n in 0..<100 {
        try await alice.client.sendText(#"{"type":"publish","room":"lobby","data":\#(n)}"#)
        try await alice.client.sendText(#"{"type":"send","to":"carol","data":\#(n)}"#)
    }
    for n in 0..<100 {
        #expect(try await bob.message { $0.room == "lobby" }.data == .number("\(n)"))
        #expect(try await carol.message().data == .number("\(n)"))
    }

    // a crowd joins one room at once, and leaves at once: its joins and leaves reach the
    // backplane in batches (`RoomCommits`); a watcher elsewhere hears each user once each way,
    // joined before left, and presence ends exact
    let watcher = try await nodes[1].connect(user: "watcher")
    try await watcher.client.join("crowd")
    let crowd = try await withThrowingTaskGroup(of: TestClient.self) { group in
        for index in 0..<30 {
            group.addTask {
                let member = try await nodes[0].connect(user: "crowd-\(index)")
                _ = try await member.client.join("crowd")
                return member
            }
        }
        return try await group.reduce(into: []) { $0.append($1) }
    }
    let names = Set((0..<30).map { "crowd-\($0)" })
    #expect(Set(try await watcher.client.presence("crowd")) == names.union(["watcher"]))
    await withTaskGroup(of: Void.self) { group in
        for member in crowd { group.addTask { await member.client.close() } }
    }
    try await eventually("every crowd member's left") {
        await Set(watcher.received().filter { $0.type == "left" }.compactMap(\.user)) == names
    }
    let seen = await watcher.received().filter { $0.room == "crowd" && ($0.type == "joined" || $0.type == "left") }
    for name in names {
        #expect(seen.filter { $0.user == name }.map(\.type) == ["joined", "left"], "\(name): \(seen.filter { $0.user == name })")
    }
    #expect(try await watcher.client.presence("crowd") == ["watcher"])
    await watcher.client.close()

    // the HTTP API of any node reaches the cluster
    let api = try await http("POST", nodes[2].http("/api/publish"), body: #"{"room":"lobby","data":"api"}"#)
    #expect(api.status == 200)
    #expect(try await bob.message { $0.data == .string("api") }.from == "server")
    try await alice.client.ping()
    try await eventually("every node in /api/nodes") {
        let listed = try await http("GET", nodes[1].http("/api/nodes")).json?["nodes"]?.array ?? []
        return listed.compactMap { $0["id"]?.string } == ["n1", "n2", "n3"] && listed.allSatisfy { $0["alive"] == .bool(true) }
    }
    // Loads reach the backplane (through Redis: at each heartbeat). Once alice is gone, n1
    // holds no connection, n2 one, n3 two (carol, bob): /api/assign answers n1.
    await alice.client.close()
    try await eventually("n1 to be assigned, once its load is published") {
        try await http("GET", (assigner ?? nodes[2]).http("/api/assign")).json
            == .object(["node": .string("n1"), "url": .string(nodes[0].ws("").replacingOccurrences(of: "?", with: ""))])
    }
}

/// A watcher on `watching` and a victim on `lost` share a room; `lose` takes `lost` away (kill -9,
/// SIGSTOP). Checks that the others notice within `deadline`: `left` arrives, once; presence,
/// `/api/users` and `/api/nodes` (asked of `registry`) forget the victim; and the room still works.
package func expectNodeLossNoticed(
    watching: NodeProcess, lost: NodeProcess, registry: NodeProcess, within deadline: Duration, leftTimeout: Duration = .seconds(10),
    lose: () async throws -> Void
) async throws {
    let watcher = try await watching.connect(user: "watcher")
    try await watcher.client.join("room")
    let victim = try await lost.connect(user: "victim")
    try await victim.client.join("room")
    _ = try await watcher.next { $0.type == "joined" && $0.user == "victim" }

    let started = ContinuousClock.now
    try await lose()
    _ = try await watcher.next("left", timeout: leftTimeout) { $0.type == "left" && $0.user == "victim" }
    #expect(ContinuousClock.now - started < deadline)
    #expect(try await watcher.client.presence("room") == ["watcher"])
    #expect(try await http("GET", watching.http("/api/users/victim")).json?["online"] == .bool(false))
    // The registry may be another node that judges liveness for itself (the mesh): it must
    // agree within the same deadline.
    try await eventually("\(registry.nodeID) to see \(lost.nodeID) gone", timeout: deadline) {
        let listed = try await http("GET", registry.http("/api/nodes")).json?["nodes"]?.array ?? []
        return !listed.contains { $0["id"] == .string(lost.nodeID) && $0["alive"] == .bool(true) }
    }

    // The room keeps working, and `left` came once.
    let bob = try await watching.connect(user: "bob")
    try await bob.client.join("room")
    try await bob.client.publish("room", data: "\"still here\"")
    _ = try await watcher.message { $0.data == .string("still here") }
    #expect(await watcher.received().filter { $0.type == "left" && $0.user == "victim" }.isEmpty)
}

/// The ids of the nodes `node` lists alive in `/api/nodes`, sorted.
package func aliveNodes(_ node: NodeProcess) async throws -> [String] {
    let listed = try await http("GET", node.http("/api/nodes")).json?["nodes"]?.array ?? []
    return listed.filter { $0["alive"] == .bool(true) }.compactMap { $0["id"]?.string }.sorted()
}

/// For backplanes that route by interest (mesh, RabbitMQ, NATS): a message crosses only to nodes
/// with a recipient (counted by each node's `backplane_events_received`), a broadcast to all,
/// and a user is online cluster-wide once its welcome came. `room` and `user` may hold dots.
package func exerciseTargetedRouting(_ nodes: [NodeProcess], room: String, user: String) async throws {
    let counter = "switchboard_backplane_events_received_total"
    let alice = try await nodes[0].connect(user: "alice-t")
    let bob = try await nodes[1].connect(user: user)
    try await bob.client.join(room)
    // n1 has heard of the join (presence) before the count starts.
    try await eventually("n1 to see \(user) in \(room)") { try await alice.client.presence(room) == [user] }
    var before: [Double] = []
    for node in nodes { before.append(try await node.metric(counter)) }
    for n in 0..<20 { try await alice.client.publish(room, data: "\(n)") }
    for n in 0..<20 { try await alice.client.send(to: user, data: "\(n)") }
    for n in 0..<20 { _ = try await bob.message { $0.data == .number("\(n)") && $0.room == nil } }
    var after: [Double] = []
    for node in nodes { after.append(try await node.metric(counter)) }
    // n2 got the 20 room messages and the 20 direct ones; n3, with no recipient, got none.
    #expect(after[1] - before[1] == 40)
    #expect(after[2] - before[2] == 0)
    try await alice.client.broadcast(data: "\"all\"")
    try await eventually("the broadcast to reach n3") { try await nodes[2].metric(counter) == after[2] + 1 }

    // Online cluster-wide once welcomed: a send from another node at once finds the user.
    for n in 0..<20 {
        let fresh = try await nodes[2].connect(user: "fresh\(n)")
        let reply = try await alice.client.request(.send(to: "fresh\(n)", data: RawJSON("\(n)")))
        #expect(reply.type == "ok", "fresh\(n): \(reply)")
        _ = try await fresh.message { $0.data == .number("\(n)") }
    }
}

/// A node drained with SIGTERM says goodbye: its users leave presence at once (within 5 s, well
/// under the 3 heartbeats silence would take at heartbeat 5 s or more), and `watching` no longer
/// lists it alive. For backplanes whose peers judge liveness themselves (mesh, brokers).
package func expectGoodbyeOnDrain(watching: NodeProcess, leaving: NodeProcess) async throws {
    let watcher = try await watching.connect(user: "watcher")
    try await watcher.client.join("room")
    let leaver = try await leaving.connect(user: "leaver")
    try await leaver.client.join("room")
    _ = try await watcher.next { $0.type == "joined" && $0.user == "leaver" }
    #expect(try await leaving.terminate() == 0)
    _ = try await watcher.next("left", timeout: .seconds(5)) { $0.type == "left" && $0.user == "leaver" }
    #expect(try await !aliveNodes(watching).contains(leaving.nodeID))
}
