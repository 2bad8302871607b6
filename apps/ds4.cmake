# ds4: the engine's command line (check mode for now; chat features join later).
add_executable(ds4 ${CMAKE_CURRENT_SOURCE_DIR}/ds4_main.cpp ${CMAKE_CURRENT_SOURCE_DIR}/ds4_check.cpp)
target_link_libraries(ds4 PRIVATE ds4_args ds4_engine nlohmann_json::nlohmann_json)
# Everything that is not check mode is the chat CLI (apps/ds4_cli*, helper "cli").
include(${CMAKE_CURRENT_SOURCE_DIR}/ds4_cli.cmake)
target_link_libraries(ds4 PRIVATE ds4_cli)
