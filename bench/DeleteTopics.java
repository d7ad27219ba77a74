// bench/DeleteTopics.java: deletes the named topics with Kafka's own Admin client (bench only).
// Run as a single-file program with the broker's jars (bench_lib.sh bench_delete_topics):
//   java -cp '.cache/kafka/libs/*' bench/DeleteTopics.java BOOTSTRAP TOPIC...
// A topic that does not exist is no error; anything else exits 1.
import java.util.Arrays;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;

public class DeleteTopics {
  public static void main(String[] args) throws Exception {
    Properties p = new Properties();
    p.put("bootstrap.servers", args[0]);
    try (Admin admin = Admin.create(p)) {
      for (String t : Arrays.copyOfRange(args, 1, args.length)) {
        try {
          admin.deleteTopics(Arrays.asList(t)).all().get();
        } catch (ExecutionException e) {
          if (!(e.getCause() instanceof UnknownTopicOrPartitionException)) throw e;
        }
      }
    }
  }
}
