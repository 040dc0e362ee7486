// A two-node-capable Centrifuge server for the Switchboard benchmarks: Redis broker and
// presence, any user (from ?user=) may subscribe to and publish in any channel, and
// subscriptions carry join/leave so that the churn scenario sees presence. A client publishes
// into a room with a publish command; a direct message is a publish into "user-NAME".
package main

import (
	"context"
	"flag"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/centrifugal/centrifuge"
)

func main() {
	port := flag.String("port", "8000", "port to listen on (127.0.0.1)")
	redis := flag.String("redis", "127.0.0.1:6379", "Redis address")
	flag.Parse()

	cfg := centrifuge.DefaultConfig
	cfg.LogLevel = centrifuge.LogLevelError
	cfg.LogHandler = func(e centrifuge.LogEntry) { log.Printf("%s: %v", e.Message, e.Fields) }
	node, err := centrifuge.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	// Each client is subscribed on the server side to its own channel, "user-NAME", where direct
	// messages to it are published (Centrifuge has no send-to-user of its own).
	node.OnConnecting(func(ctx context.Context, e centrifuge.ConnectEvent) (centrifuge.ConnectReply, error) {
		credentials, _ := centrifuge.GetCredentials(ctx)
		own := map[string]centrifuge.SubscribeOptions{"user-" + credentials.UserID: {}}
		return centrifuge.ConnectReply{Subscriptions: own}, nil
	})
	node.OnConnect(func(client *centrifuge.Client) {
		client.OnSubscribe(func(e centrifuge.SubscribeEvent, cb centrifuge.SubscribeCallback) {
			cb(centrifuge.SubscribeReply{Options: centrifuge.SubscribeOptions{Presence: true, JoinLeave: true}}, nil)
		})
		client.OnPublish(func(e centrifuge.PublishEvent, cb centrifuge.PublishCallback) {
			cb(centrifuge.PublishReply{}, nil)
		})
	})

	shard, err := centrifuge.NewRedisShard(node, centrifuge.RedisShardConfig{Address: *redis})
	if err != nil {
		log.Fatal(err)
	}
	shards := []*centrifuge.RedisShard{shard}
	broker, err := centrifuge.NewRedisBroker(node, centrifuge.RedisBrokerConfig{Shards: shards})
	if err != nil {
		log.Fatal(err)
	}
	node.SetBroker(broker)
	presence, err := centrifuge.NewRedisPresenceManager(node, centrifuge.RedisPresenceManagerConfig{Shards: shards})
	if err != nil {
		log.Fatal(err)
	}
	node.SetPresenceManager(presence)
	if err := node.Run(); err != nil {
		log.Fatal(err)
	}

	websocket := centrifuge.NewWebsocketHandler(node, centrifuge.WebsocketConfig{})
	http.Handle("/ws", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := r.URL.Query().Get("user")
		ctx := centrifuge.SetCredentials(r.Context(), &centrifuge.Credentials{UserID: user})
		websocket.ServeHTTP(w, r.WithContext(ctx))
	}))
	http.Handle("/readyz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) }))

	go func() {
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
		<-signals
		_ = node.Shutdown(context.Background())
		os.Exit(0)
	}()
	log.Fatal(http.ListenAndServe("127.0.0.1:"+*port, nil))
}
