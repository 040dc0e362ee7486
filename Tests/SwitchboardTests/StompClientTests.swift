import SwitchboardTesting
import Testing

/// stomp.py (PyPI `stomp.py`, its WebSocket transport on `websocket-client`), a real third-party
/// STOMP client, and a JSON client in the same rooms across two nodes: `Tests/Interop/stomp_py.py`.
@Suite struct StompClientTests {
    @Test func stompPyAndAJSONClientTalkAcrossTwoNodes() async throws {
        try await withCluster(nodes: 2, configure: { $0.heartbeatSeconds = 2 }) { cluster in
            try await runPython(
                "Interop/stomp_py.py", ["--stomp-port", "\(cluster.ports[1])", "--json-port", "\(cluster.ports[0])"],
                timeout: .seconds(90))
        }
    }
}
