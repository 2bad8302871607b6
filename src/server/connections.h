// Connection handling around cpp-httplib. The library's own listener gives each connection
// a thread from a fixed pool for as long as the client keeps it (so 64 clients trickling
// their headers starve everyone), reads only with per-read timeouts, drops pipelined bytes
// between requests, and listens with a backlog of 5. Here the accept loop and the
// per-connection loop are ours; httplib still parses each request and runs the routes
// (Server::process_request over our Stream).
//
// Limits: connections in total and per client address (over them: 503 / 429 and close),
// the request line and headers must arrive within the header timeout (and fit in 64 KiB),
// an idle keep-alive connection is closed after the idle timeout, a body read or response
// write that stalls for the I/O timeout ends the connection. Every accepted connection gets
// its own thread at once, so /health and /metrics are answered whatever else is running.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

namespace ds4::server {

struct ConnectionLimits {
  int backlog = 512;
  int max_connections = 512;        // 0 = unlimited (bounded by the fd limit)
  int max_per_client = 128;         // per remote address; 0 = unlimited
  int header_timeout_s = 10;        // first byte of a request -> end of its headers
  int idle_timeout_s = 15;          // keep-alive wait for the next request
  int io_timeout_s = 10;            // a stalled body read or response write
  size_t max_header_bytes = 64 << 10;  // request line + headers
  // Optional gauges (metrics.h): connections open now, connections refused.
  std::atomic<int64_t>* open_gauge = nullptr;
  std::atomic<uint64_t>* refused_counter = nullptr;
};

// httplib's server with the protected per-request entry point made reachable.
class RequestEngine : public httplib::Server {
 public:
  bool serve_request(httplib::Stream& strm, bool close_connection, bool& connection_closed) {
    return process_request(strm, close_connection, connection_closed, nullptr);
  }
  // httplib ends chunked responses early once its listening socket is gone; the flag
  // stands for "serving" while our own listener runs and during the drain.
  void mark_serving(int fd) { svr_sock_ = fd; }
};

class ConnectionServer {
 public:
  ConnectionServer(RequestEngine& engine, ConnectionLimits limits);
  ~ConnectionServer();
  ConnectionServer(const ConnectionServer&) = delete;
  ConnectionServer& operator=(const ConnectionServer&) = delete;

  // Binds and listens; returns the port (useful with port 0). Throws std::runtime_error.
  int bind(const std::string& host, int port);
  // Accepts until stop_accepting() (or a listener failure: returns false).
  bool serve();
  // Closes the listening socket; serve() returns.
  void stop_accepting();
  // Shutdown: idle keep-alive connections close now, a request in progress finishes and
  // its response says Connection: close. Waits up to `timeout_ms` for every connection to
  // end; returns whether they all did.
  bool drain(int timeout_ms);

  // Connections open now (tests, metrics).
  int open_connections() const;

  struct Conn;

 private:
  void accept_loop();
  void serve_connection(Conn& c);
  void reject(int fd, int status, const char* message);
  void thread_main();
  void release(const std::string& addr);

  RequestEngine& engine_;
  const ConnectionLimits limits_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};         // pipe: readable once draining starts (wakes idle connections)
  int accept_wake_[2] = {-1, -1};  // pipe: readable once accepting stops
  std::atomic<bool> accepting_{false};
  std::atomic<bool> draining_{false};

  mutable std::mutex mu_;
  std::condition_variable cv_;       // work for the connection threads
  std::condition_variable idle_cv_;  // a connection ended (drain waits on it)
  std::deque<std::unique_ptr<Conn>> pending_;
  std::vector<std::thread> threads_;
  size_t idle_threads_ = 0;
  bool stopping_ = false;
  int open_ = 0;
  std::map<std::string, int> per_client_;
};

// For route handlers (they run on the connection's thread): whether the client of the
// request being served is gone. A client that only shut down its sending side (FIN after
// its request) still gets its answer; before the response has started it is probed with an
// interim "100 Continue" (HTTP/1.1 clients skip it), which a closed socket answers with a
// reset. HTTP/1.0 clients, who must not get an interim response, count as gone at FIN.
bool current_client_gone();
// Whether current_client_gone() has seen the client shut down its sending side.
bool current_client_half_closed();
// Marks the end of the request headers (called from the pre-routing handler): the header
// deadline no longer applies to the body.
void current_request_headers_done(bool http10);
// Marks that the response of the current request has begun (called from the post-routing
// handler, just before the status line is written).
void current_response_started();
// Whether the server is draining for shutdown (responses then say Connection: close).
bool current_connection_draining();
// After this response the connection closes (the request body was not consumed, ...).
void current_connection_close_after();

}  // namespace ds4::server
