#include "server/connections.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

namespace ds4::server {

using Clock = std::chrono::steady_clock;

namespace {

std::string address_text(const sockaddr_storage& ss, int* port) {
  char buf[INET6_ADDRSTRLEN] = {0};
  *port = -1;
  if (ss.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
    *port = ntohs(in->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    *port = ntohs(in6->sin6_port);
    // An IPv4 client of a dual-stack socket counts as its IPv4 address.
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], buf, sizeof buf);
    } else {
      inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
    }
  }
  return buf;
}

int ms_until(Clock::time_point t) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(ms, 0, 1 << 30));
}

bool send_all(int fd, const char* p, size_t n, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) {
      p += w;
      n -= static_cast<size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return false;
    pollfd pf{fd, POLLOUT, 0};
    const int left = ms_until(deadline);
    if (left <= 0 || ::poll(&pf, 1, left) <= 0 || (pf.revents & (POLLERR | POLLHUP | POLLNVAL))) {
      return false;
    }
  }
  return true;
}

}  // namespace

// One client connection: its socket, a read buffer that outlives each request (pipelined
// requests stay queued in it), the deadline of the request being read, and its state.
struct ConnectionServer::Conn final : httplib::Stream {
  ConnectionServer* server = nullptr;
  int fd = -1;
  std::string remote_addr, local_addr;
  int remote_port = -1, local_port = -1;

  std::string buf;  // unread bytes
  size_t off = 0;

  enum class Phase { Headers, Body } phase = Phase::Headers;
  Clock::time_point header_deadline;
  size_t header_bytes = 0;
  bool response_started = false;
  bool close_after = false;
  bool saw_fin = false;    // the client shut down its sending side
  bool probed = false;     // the interim response went out after that
  bool http10 = false;

  bool buffered() const { return off < buf.size(); }
  bool draining() const { return server->draining_.load(); }

  bool is_readable() const override {
    if (buffered()) return true;
    pollfd pf{fd, POLLIN, 0};
    return ::poll(&pf, 1, 0) > 0;
  }
  bool is_writable() const override {
    pollfd pf{fd, POLLOUT, 0};
    return ::poll(&pf, 1, server->limits_.io_timeout_s * 1000) > 0 &&
           !(pf.revents & (POLLERR | POLLHUP | POLLNVAL));
  }

  ssize_t read(char* ptr, size_t size) override {
    if (phase == Phase::Headers && header_bytes >= server->limits_.max_header_bytes) return -1;
    if (!buffered()) {
      buf.clear();
      off = 0;
      int timeout = server->limits_.io_timeout_s * 1000;
      if (phase == Phase::Headers) timeout = std::min(timeout, ms_until(header_deadline));
      pollfd pf{fd, POLLIN, 0};
      int r;
      do {
        r = ::poll(&pf, 1, timeout);
      } while (r < 0 && errno == EINTR);
      if (r <= 0) return -1;  // timed out (a slow client) or failed
      char chunk[16384];
      ssize_t n;
      do {
        n = ::recv(fd, chunk, sizeof chunk, 0);
      } while (n < 0 && errno == EINTR);
      if (n <= 0) {
        if (n == 0) saw_fin = true;
        return n;
      }
      buf.assign(chunk, static_cast<size_t>(n));
    }
    size_t n = std::min(size, buf.size() - off);
    if (phase == Phase::Headers) {
      n = std::min(n, server->limits_.max_header_bytes - header_bytes);
      header_bytes += n;
    }
    std::memcpy(ptr, buf.data() + off, n);
    off += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (!send_all(fd, ptr, size, server->limits_.io_timeout_s * 1000)) return -1;
    return static_cast<ssize_t>(size);
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = remote_addr;
    port = remote_port;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip = local_addr;
    port = local_port;
  }
  socket_t socket() const override { return fd; }

  // See current_client_gone().
  bool client_gone() {
    pollfd pf{fd, static_cast<short>(POLLIN | POLLRDHUP), 0};
    if (::poll(&pf, 1, 0) <= 0) return false;
    if (pf.revents & (POLLERR | POLLHUP | POLLNVAL)) return true;
    if (pf.revents & POLLRDHUP) saw_fin = true;
    if (!saw_fin) return false;
    if (http10) return true;
    if (!response_started && !probed) {
      probed = true;
      static const char kProbe[] = "HTTP/1.1 100 Continue\r\n\r\n";
      if (!send_all(fd, kProbe, sizeof kProbe - 1, 1000)) return true;
    }
    return false;
  }
};

namespace {
thread_local ConnectionServer::Conn* t_conn = nullptr;
}  // namespace

bool current_client_gone() {
  if (!t_conn || !t_conn->client_gone()) return false;
  t_conn->close_after = true;
  return true;
}

bool current_client_half_closed() { return t_conn && t_conn->saw_fin; }

void current_request_headers_done(bool http10) {
  if (!t_conn) return;
  t_conn->phase = ConnectionServer::Conn::Phase::Body;
  t_conn->http10 = http10;
}

void current_response_started() {
  if (t_conn) t_conn->response_started = true;
}

void current_connection_close_after() {
  if (t_conn) t_conn->close_after = true;
}

ConnectionServer::ConnectionServer(RequestEngine& engine, ConnectionLimits limits)
    : engine_(engine), limits_(limits) {
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0 ||
      ::pipe2(accept_wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
    throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  }
}

ConnectionServer::~ConnectionServer() {
  stop_accepting();
  drain(0);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    // Connections still open: end their reads and writes so their threads finish.
    for (auto& c : pending_) ::close(c->fd);
    pending_.clear();
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  for (int fd : {wake_[0], wake_[1], accept_wake_[0], accept_wake_[1]}) ::close(fd);
}

int ConnectionServer::bind(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res); rc != 0) {
    throw std::runtime_error("cannot listen on " + host + ":" + service + ": " + gai_strerror(rc));
  }
  std::string why = "no address";
  for (addrinfo* a = res; a; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, limits_.backlog) == 0) {
      listen_fd_ = fd;
      break;
    }
    why = std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(res);
  if (listen_fd_ < 0) throw std::runtime_error("cannot listen on " + host + ":" + service + ": " + why);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len);
  int bound = -1;
  address_text(ss, &bound);
  engine_.mark_serving(listen_fd_);
  accepting_ = true;
  return bound;
}

bool ConnectionServer::serve() {
  if (listen_fd_ < 0) return false;
  accept_loop();
  return !accepting_.load() || draining_.load();
}

void ConnectionServer::stop_accepting() {
  if (accepting_.exchange(false) && listen_fd_ >= 0) {
    // Wakes accept_loop's poll; the descriptor itself is closed there.
    const char c = 0;
    (void)!::write(accept_wake_[1], &c, 1);
  }
}

void ConnectionServer::accept_loop() {
  while (accepting_) {
    pollfd pf[2] = {{listen_fd_, POLLIN, 0}, {accept_wake_[0], POLLIN, 0}};
    const int r = ::poll(pf, 2, -1);
    if (r < 0 && errno == EINTR) continue;
    if (!accepting_) break;
    if (!(pf[0].revents & POLLIN)) {
      if (pf[0].revents & (POLLERR | POLLNVAL)) break;
      continue;
    }
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    const int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors: pending connections wait in the backlog meanwhile.
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      continue;  // EINTR, ECONNABORTED, EAGAIN, ... (a failed listener shows in poll)
    }
    auto c = std::make_unique<Conn>();
    c->server = this;
    c->fd = fd;
    c->remote_addr = address_text(ss, &c->remote_port);
    sockaddr_storage self{};
    len = sizeof self;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&self), &len) == 0) {
      c->local_addr = address_text(self, &c->local_port);
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // SSE frames go out at once

    // httplib answers 500 to a descriptor select() cannot watch.
    if (fd >= FD_SETSIZE) {
      reject(fd, 503, "server at its connection limit");
      continue;
    }
    std::unique_lock<std::mutex> lock(mu_);
    if (limits_.max_connections > 0 && open_ >= limits_.max_connections) {
      lock.unlock();
      reject(fd, 503, "server at its connection limit");
      continue;
    }
    int& mine = per_client_[c->remote_addr];
    if (limits_.max_per_client > 0 && mine >= limits_.max_per_client) {
      if (mine == 0) per_client_.erase(c->remote_addr);
      lock.unlock();
      reject(fd, 429, "too many connections from this address");
      continue;
    }
    ++mine;
    ++open_;
    if (limits_.open_gauge) ++*limits_.open_gauge;
    pending_.push_back(std::move(c));
    // Every connection gets a thread now: one never waits behind slow ones.
    if (idle_threads_ < pending_.size()) {
      threads_.emplace_back([this] { thread_main(); });
    } else {
      cv_.notify_one();
    }
  }
  ::close(listen_fd_);
}

// Over a limit: a short answer without reading the request, then the connection closes.
void ConnectionServer::reject(int fd, int status, const char* message) {
  if (limits_.refused_counter) ++*limits_.refused_counter;
  const std::string body = std::string(R"({"error":{"message":")") + message +
                           R"(","type":")" + (status == 429 ? "rate_limit_error" : "server_error") +
                           R"(","code":"too_many_connections"}})";
  const std::string head = "HTTP/1.1 " + std::to_string(status) +
                           (status == 429 ? " Too Many Requests" : " Service Unavailable") +
                           "\r\nContent-Type: application/json\r\nContent-Length: " +
                           std::to_string(body.size()) +
                           "\r\nRetry-After: 1\r\nConnection: close\r\n\r\n";
  const std::string all = head + body;
  (void)!::send(fd, all.data(), all.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  ::shutdown(fd, SHUT_WR);
  // Reading what the client already sent keeps close() from resetting the connection
  // before the answer is read.
  char sink[4096];
  for (int i = 0; i < 16 && ::recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; ++i) {
  }  // bounded: this runs on the accept thread
  ::close(fd);
}

void ConnectionServer::thread_main() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    ++idle_threads_;
    cv_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
    --idle_threads_;
    if (pending_.empty()) return;
    std::unique_ptr<Conn> c = std::move(pending_.front());
    pending_.pop_front();
    lock.unlock();
    serve_connection(*c);
    const std::string addr = c->remote_addr;
    c.reset();
    lock.lock();
    if (--per_client_[addr] <= 0) per_client_.erase(addr);
    --open_;
    if (limits_.open_gauge) --*limits_.open_gauge;
    idle_cv_.notify_all();
  }
}

void ConnectionServer::serve_connection(Conn& c) {
  t_conn = &c;
  bool fresh = true;
  while (true) {
    if (!c.buffered()) {
      // Waiting for the next request: a new connection has the header timeout to start
      // one, a kept-alive one the idle timeout; a drain ends the wait.
      const int wait_ms = (fresh ? limits_.header_timeout_s : limits_.idle_timeout_s) * 1000;
      const auto deadline = Clock::now() + std::chrono::milliseconds(wait_ms);
      bool ready = false;
      if (draining_) {
        // A request already on its way is still answered (with Connection: close).
        pollfd pf{c.fd, POLLIN, 0};
        ready = ::poll(&pf, 1, 0) > 0;
      }
      while (!ready && !draining_) {
        pollfd pf[2] = {{c.fd, POLLIN, 0}, {wake_[0], POLLIN, 0}};
        const int left = ms_until(deadline);
        const int r = ::poll(pf, 2, left);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 || left == 0) break;
        if (pf[0].revents) {
          ready = true;
          break;
        }
      }
      if (!ready) break;
    }
    c.phase = Conn::Phase::Headers;
    c.header_bytes = 0;
    c.header_deadline = Clock::now() + std::chrono::seconds(limits_.header_timeout_s);
    c.response_started = false;
    c.saw_fin = false;
    c.probed = false;
    c.http10 = false;
    // Requests that begin while draining are answered and the connection then closes.
    bool closed = false;
    const bool ok = engine_.serve_request(c, draining_.load(), closed);
    fresh = false;
    if (!ok || closed || c.close_after || draining_) break;
  }
  t_conn = nullptr;
  // Lingering close: send FIN, then read what the client still sends for a moment, so an
  // answer already written is not destroyed by a reset.
  ::shutdown(c.fd, SHUT_WR);
  const auto until = Clock::now() + std::chrono::milliseconds(500);
  char sink[4096];
  while (true) {
    pollfd pf{c.fd, POLLIN, 0};
    const int left = ms_until(until);
    if (left <= 0 || ::poll(&pf, 1, left) <= 0) break;
    if (::recv(c.fd, sink, sizeof sink, MSG_DONTWAIT) <= 0) break;
  }
  ::close(c.fd);
}

bool ConnectionServer::drain(int timeout_ms) {
  if (!draining_.exchange(true)) {
    const char c = 1;
    (void)!::write(wake_[1], &c, 1);
  }
  std::unique_lock<std::mutex> lock(mu_);
  return idle_cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                           [&] { return open_ == 0; });
}

int ConnectionServer::open_connections() const {
  std::lock_guard<std::mutex> lock(mu_);
  return open_;
}

bool current_connection_draining() { return t_conn && t_conn->draining(); }

}  // namespace ds4::server
