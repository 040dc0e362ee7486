import SwitchboardClient
import SwitchboardCore
import SwitchboardProtocol
import Testing

/// PROTOCOL.md "History and recovery" across three running nodes, for a backplane that keeps
/// history (default size 100): offsets, resume on another node, the gap too big, a wrong epoch,
/// the inbox, `history` and `/api/history`, and publishing while a client resumes.
package func exerciseHistoryRows(_ nodes: [NodeProcess]) async throws {
    let reader1 = try await nodes[0].connect(user: "reader1")
    let reader3 = try await nodes[2].connect(user: "reader3")
    let opened = try await reader3.client.join("h")
    #expect(opened.top?.offset == 0 && !(opened.epoch ?? "").isEmpty)
    try await reader1.client.join("h")
    let epoch = try #require(opened.epoch)

    // Two publishers on two nodes: every node sees offsets 1...100, one order, one offset per id.
    let pub1 = try await nodes[0].connect(user: "pub1"), pub2 = try await nodes[1].connect(user: "pub2")
    async let first: Void = publish(pub1, "h", count: 50, tag: "a")
    async let second: Void = publish(pub2, "h", count: 50, tag: "b")
    _ = try await (first, second)
    let seen1 = try await messages(reader1, room: "h", count: 100)
    let seen3 = try await messages(reader3, room: "h", count: 100)
    #expect(seen1.map(\.offset) == (1...100).map { Optional(Int64($0)) })
    #expect(seen1.map(\.id) == seen3.map(\.id) && seen1.map(\.offset) == seen3.map(\.offset))
    // Each publisher's own messages stay in its order.
    for tag in ["a", "b"] {
        #expect(seen1.compactMap { $0.data?.string?.hasPrefix(tag) == true ? $0.data?.string : nil } == (0..<50).map { "\(tag)\($0)" })
    }

    // history and GET /api/history: the last ones, as their recipients got them.
    let history = try await pub2.client.history("h", limit: 10)
    #expect(history.top == StreamPosition(epoch: epoch, offset: 100))
    #expect(history.messages?.map { $0["offset"]?.int } == (91...100).map { Optional($0) })
    #expect(history.messages?.map { $0["id"] } == seen1.suffix(10).map(\.id))
    let api = try await http("GET", nodes[2].http("/api/history/h?limit=3")).json
    #expect(api?["offset"]?.int == 100 && api?["epoch"]?.string == epoch)
    #expect(api?["messages"]?.array?.map { $0["offset"]?.int } == [98, 99, 100])

    // Resume on another node: exactly what was missed after offset 60, in order.
    await reader3.client.close()
    let moved = try await nodes[1].connect(user: "reader3")
    let resumed = try await moved.client.join("h", since: StreamPosition(epoch: epoch, offset: 60))
    #expect(resumed.recovered == true && resumed.top?.offset == 100)
    #expect(try await messages(moved, room: "h", count: 40).map(\.id) == Array(seen1.map(\.id)[60...]))

    // One more message: offset 0 is now 101 messages behind, more than the history keeps.
    try await pub1.client.publish("h", data: "\"101\"")
    _ = try await moved.message { $0.offset == 101 }
    let tooFar = try await nodes[2].connect(user: "late")
    let gap = try await tooFar.client.join("h", since: StreamPosition(epoch: epoch, offset: 0))
    #expect(gap.recovered == false && gap.top?.offset == 101)
    let wrongEpoch = try await tooFar.client.join("h2", since: StreamPosition(epoch: "not-the-epoch", offset: 0))
    #expect(wrongEpoch.recovered == false)
    // Nothing was replayed: the next message is the next one published.
    try await pub1.client.publish("h", data: "\"102\"")
    #expect(try await tooFar.message { $0.room == "h" }.offset == 102)

    // The inbox: a second connection of the user resumes on another node with ?since=.
    let dana1 = try await nodes[0].connect(user: "dana")
    let dana2 = try await nodes[2].connect(user: "dana")
    let inbox = try #require(dana2.client.welcome.inbox)
    for n in 0..<5 { try await pub2.client.send(to: "dana", data: "\(n)") }
    let atDana2 = try await messages(dana2, room: nil, count: 5)
    #expect(atDana2.map(\.offset) == (1...5).map { Optional(inbox.offset + Int64($0)) })
    await dana2.client.close()
    for n in 5..<8 { try await pub2.client.send(to: "dana", data: "\(n)") }
    _ = try await messages(dana1, room: nil, count: 8)
    let back = try await TestClient(
        SwitchboardClient.connect(to: nodes[1].ws("user=dana&since=\(inbox.epoch):\(inbox.offset + 5)")))
    #expect(back.client.welcome.recovered == true && back.client.welcome.inbox?.offset == inbox.offset + 8)
    #expect(try await messages(back, room: nil, count: 3).map { $0.data } == [.number("5"), .number("6"), .number("7")])

    // Publishing while a client resumes, again and again on other nodes: no gap, no duplicate.
    let churner = try await nodes[0].connect(user: "churner")
    var position = try #require(try await churner.client.join("seam").top)
    let publisher = Task {
        for n in 0..<300 { try await pub1.client.publish("seam", data: "\(n)") }
    }
    var got: [Int64] = []
    var hop = 0
    while got.count < 300 {
        let current: TestClient
        if hop == 0 {
            current = churner
        } else {
            current = try await nodes[hop % 3].connect(user: "churner")
            let reply = try await current.client.join("seam", since: position)
            #expect(reply.recovered == true)
        }
        // Read a few, then drop the connection while the publisher goes on.
        for _ in 0..<min(40, 300 - got.count) {
            let message = try await current.message { $0.room == "seam" }
            got.append(message.offset ?? -1)
            position.offset = message.offset ?? position.offset
        }
        await current.client.close()
        hop += 1
    }
    try await publisher.value
    #expect(got == (1...300).map { position.offset - 300 + Int64($0) })
}

/// PROTOCOL.md for a backplane that keeps no history (the mesh).
package func exerciseNoHistoryRows(_ nodes: [NodeProcess]) async throws {
    let alice = try await nodes[0].connect(user: "alice-nh")
    #expect(alice.client.welcome.inbox == nil)
    let joined = try await alice.client.join("nh", since: StreamPosition(epoch: "e", offset: 3))
    #expect(joined.recovered == false && joined.epoch == nil && joined.offset == nil)
    let refused = try await alice.client.request(.history(room: "nh", limit: nil))
    #expect(refused.code == "unsupported")
    try await alice.client.publish("nh", data: "1")
    let message = try await alice.message { $0.room == "nh" }
    #expect(message.offset == nil)
    let resumed = try await TestClient(SwitchboardClient.connect(to: nodes[1].ws("user=alice-nh&since=e:3")))
    #expect(resumed.client.welcome.recovered == false)
    #expect(try await http("GET", nodes[2].http("/api/history/nh")).status == 501)
}

private func publish(_ client: TestClient, _ room: String, count: Int, tag: String) async throws {
    // Pipelined: the answers come in order, as the cluster takes each.
    for n in 0..<count {
        try await client.client.sendText(#"{"type":"publish","room":"\#(room)","data":"\#(tag)\#(n)","id":"\#(tag)\#(n)"}"#)
    }
    for n in 0..<count {
        let reply = try await client.next { $0.id == .string("\(tag)\(n)") }
        #expect(reply.type == "ok")
    }
}

/// The next `count` messages of `room` (nil: direct messages).
private func messages(_ client: TestClient, room: String?, count: Int) async throws -> [ServerMessage] {
    var out: [ServerMessage] = []
    for _ in 0..<count {
        out.append(try await client.message { room == nil ? $0.to != nil : $0.room == room })
    }
    return out
}
