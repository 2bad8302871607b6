// Detecting a client that went away while its request waits or runs. cpp-httplib does not
// expose a connection's socket, so it is found by matching the connection's addresses.
#pragma once

#include <string>

namespace ds4::server {

// The socket fd whose local and peer addresses match, or -1.
int find_connection_fd(const std::string& local_addr, int local_port,
                       const std::string& remote_addr, int remote_port);
// True once the peer has closed or reset the connection (a pending pipelined request does
// not count). fd < 0: false.
bool peer_closed(int fd);

}  // namespace ds4::server
