# History benchmark tools (included from tests/bench/CMakeLists.txt):
#   hist-publish  durable publish throughput (SQL or REST) and publish-to-delivery latency
#   hist-resume   resume storm: C clients subscribe with `since` at once, replay verified
# run-history.sh runs them against a fresh PostgreSQL, Redis and Herald.
add_executable(hist-publish hist_publish.c hist_common.c bench_ws.c bench_stats.c)
target_link_libraries(hist-publish PRIVATE herald_common PkgConfig::HIREDIS PkgConfig::LIBPQ pthread)

add_executable(hist-resume hist_resume.c hist_common.c bench_ws.c bench_stats.c)
target_link_libraries(hist-resume PRIVATE pthread)

# A correctness smoke of both tools (a few seconds; starts its own PostgreSQL and Redis).
if(TARGET herald)
  add_test(NAME bench_history_smoke
           COMMAND ${CMAKE_COMMAND} -E env SMOKE=1
                   ${CMAKE_CURRENT_SOURCE_DIR}/run-history.sh $<TARGET_FILE:herald>
                   $<TARGET_FILE:hist-publish> $<TARGET_FILE:hist-resume>)
  set_tests_properties(bench_history_smoke PROPERTIES TIMEOUT 120 LABELS bench)
endif()
