#include "server/http_server.h"

#include "server/connections.h"
#include "server/request_fields.h"
#include "server/routes.h"

namespace ds4::server {

HttpServer::HttpServer(const ServerOptions& options, const text::Tokenizer& tok, Worker& worker,
                       Metrics& metrics)
    : options_(options), tok_(tok), worker_(worker), metrics_(metrics),
      svr_(std::make_unique<RequestEngine>()),
      routes_(std::make_unique<Routes>(Routes{options_, tok_, worker_, metrics_, next_id_, max_token_bytes(tok)})) {
  ConnectionLimits limits;
  limits.backlog = options_.listen_backlog;
  limits.max_connections = options_.max_connections;
  limits.max_per_client = options_.max_client_connections;
  limits.header_timeout_s = options_.header_timeout_s;
  limits.idle_timeout_s = options_.keep_alive_timeout_s;
  limits.io_timeout_s = options_.io_timeout_s;
  limits.open_gauge = &metrics_.open_connections;
  limits.refused_counter = &metrics_.refused_connections;
  conns_ = std::make_unique<ConnectionServer>(*svr_, limits);
  install_routes();
}

HttpServer::~HttpServer() = default;

int HttpServer::bind() { return conns_->bind(options_.host, options_.port); }

bool HttpServer::serve() { return conns_->serve(); }

void HttpServer::stop_accepting() { conns_->stop_accepting(); }

bool HttpServer::drain(int timeout_ms) { return conns_->drain(timeout_ms); }

void HttpServer::install_routes() {
  httplib::Server& svr = *svr_;
  install_admin_routes(svr, *routes_);
  install_openai_routes(svr, *routes_);
  install_anthropic_routes(svr, *routes_);
  install_responses_routes(svr, *routes_);
}

}  // namespace ds4::server
