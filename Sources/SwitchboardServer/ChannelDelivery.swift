import NIOCore
import SwitchboardCore
import SwitchboardProtocol

/// Delivers cluster events to local connections: the frame is encoded once into one buffer, and
/// each event loop gets one task that writes that buffer to all of its connections and then
/// flushes each of them once.
struct ChannelDelivery: LocalDelivery {
    let allocator = ByteBufferAllocator()

    func deliver(_ event: ClusterEvent, to connections: [Connection]) {
        let frame = allocator.buffer(bytes: ServerFrame.event(event))
        if connections.count == 1 {
            let connection = connections[0]
            connection.eventLoop.execute {
                connection.write(frame)
                connection.channel.flush()
            }
            return
        }
        for (loop, group) in Self.byEventLoop(connections) {
            loop.execute {
                for connection in group { connection.write(frame) }
                for connection in group { connection.channel.flush() }
            }
        }
    }

    /// Groups connections by event loop. There are few loops (one per core), so a linear scan
    /// over them beats hashing.
    static func byEventLoop(_ connections: [Connection]) -> [(any EventLoop, [Connection])] {
        var groups: [(any EventLoop, [Connection])] = []
        for connection in connections {
            let loop = connection.eventLoop
            if let index = groups.firstIndex(where: { $0.0 === loop }) {
                groups[index].1.append(connection)
            } else {
                groups.append((loop, [connection]))
            }
        }
        return groups
    }
}
